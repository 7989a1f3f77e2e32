//! JSON-lines input: one object per line, `{"feature": value, ...}`, parsed with serde_json.
//! Each value is taken as its raw JSON text (`RawValue`), so a number reaches the id or float
//! parser as written: ids never pass through f64, floats round once, to f32.

use std::fmt;
use std::io::{BufRead, ErrorKind};

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{split_cell, Batch, InputSpec, RowSource};
use crate::column::InputColumn;
use crate::error::CliError;
use ple::InputKind;

pub struct JsonLinesSource<R> {
    reader: R,
    label: String,
    specs: Vec<InputSpec>,
    line: String,
    line_number: u64,
    bytes_read: u64,
    /// The input's size in bytes, when known (for progress).
    size: Option<u64>,
}

impl<R: BufRead> JsonLinesSource<R> {
    pub fn new(reader: R, size: Option<u64>, label: String, specs: &[InputSpec]) -> Self {
        JsonLinesSource {
            reader,
            label,
            specs: specs.to_vec(),
            line: String::new(),
            line_number: 0,
            bytes_read: 0,
            size,
        }
    }

    /// Reads the next line into `self.line`; false at the end of the input.
    fn next_line(&mut self) -> Result<bool, CliError> {
        self.line.clear();
        let n = self.reader.read_line(&mut self.line).map_err(|e| {
            let what = if e.kind() == ErrorKind::InvalidData {
                "is not UTF-8 text"
            } else {
                "cannot be read"
            };
            CliError::failed(format!(
                "{} line {}: {what} ({e})",
                self.label,
                self.line_number + 1
            ))
        })?;
        self.line_number += 1;
        self.bytes_read += n as u64;
        Ok(n > 0)
    }
}

impl<R: BufRead> RowSource for JsonLinesSource<R> {
    fn fill(&mut self, batch: &mut Batch, max: usize) -> Result<usize, CliError> {
        batch.clear();
        while batch.rows() < max && self.next_line()? {
            let line_number = self.line_number;
            let mut text = self.line.trim();
            if line_number == 1 {
                text = text.trim_start_matches('\u{feff}');
            }
            if text.is_empty() {
                continue;
            }
            let at =
                |e: String| CliError::failed(format!("{} line {line_number}: {e}", self.label));
            let row = parse_row(text).map_err(at)?;
            for (spec, column) in self.specs.iter().zip(&mut batch.columns) {
                let pushed = match row.get(&spec.name) {
                    None => Err("missing (every model input needs a key)".to_string()),
                    Some(value) => push_value(spec, value, column),
                };
                pushed.map_err(|e| at(format!("input '{}': {e}", spec.name)))?;
            }
            batch.origins.push(line_number);
        }
        Ok(batch.rows())
    }

    fn locate(&self, origin: u64) -> String {
        format!("{} line {origin}", self.label)
    }

    fn progress(&self) -> Option<f64> {
        self.size
            .filter(|&s| s > 0)
            .map(|s| self.bytes_read as f64 / s as f64)
    }
}

/// One line's members in order, each value as its JSON text.
struct JsonRow<'a>(Vec<(String, &'a RawValue)>);

impl<'a> JsonRow<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for JsonRow<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = JsonRow<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonRow<'de>, A::Error> {
                let mut members: Vec<(String, &'de RawValue)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if members.iter().any(|(k, _)| *k == key) {
                        return Err(A::Error::custom(format!("duplicate key \"{key}\"")));
                    }
                    members.push((key, map.next_value()?));
                }
                Ok(JsonRow(members))
            }
        }
        deserializer.deserialize_map(RowVisitor)
    }
}

fn parse_row(text: &str) -> Result<JsonRow<'_>, String> {
    let kind = JsonKind::of(text);
    if kind != JsonKind::Object && serde_json::from_str::<&RawValue>(text).is_ok() {
        return Err(format!(
            "expected one JSON object per line ({{\"feature\": value, ...}}), got {}",
            kind.describe()
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        // serde_json appends " at line L column C"; within one line, the column is what helps.
        let full = e.to_string();
        let reason = full
            .strip_suffix(&format!(" at line {} column {}", e.line(), e.column()))
            .unwrap_or(&full);
        if e.is_data() {
            reason.to_string()
        } else {
            format!("invalid JSON at column {}: {reason}", e.column())
        }
    })
}

/// The kind of a JSON value, known from its first byte (the text is valid JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonKind {
    Number,
    String,
    Array,
    Object,
    Boolean,
    Null,
}

impl JsonKind {
    fn of(text: &str) -> JsonKind {
        match text.as_bytes().first() {
            Some(b'"') => JsonKind::String,
            Some(b'[') => JsonKind::Array,
            Some(b'{') => JsonKind::Object,
            Some(b't' | b'f') => JsonKind::Boolean,
            Some(b'n') => JsonKind::Null,
            _ => JsonKind::Number,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            JsonKind::Number => "a number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
            JsonKind::Boolean => "a boolean",
            JsonKind::Null => "null",
        }
    }
}

/// Appends one input's value: a number, an array of numbers, a string holding values as in a
/// CSV cell, or `null` (an empty sequence).
fn push_value(spec: &InputSpec, value: &RawValue, column: &mut InputColumn) -> Result<(), String> {
    let text = value.get();
    match JsonKind::of(text) {
        JsonKind::Number => spec.push_texts([text], column),
        JsonKind::String => {
            let cell: String = serde_json::from_str(text).map_err(|e| e.to_string())?;
            spec.push_texts(split_cell(&cell), column)
        }
        JsonKind::Null if spec.kind == InputKind::Sequence => spec.push_texts([], column),
        JsonKind::Array => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
            let texts = items
                .iter()
                .map(|item| match JsonKind::of(item.get()) {
                    JsonKind::Number => Ok(item.get()),
                    other => Err(format!(
                        "array items must be numbers, found {}",
                        other.describe()
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            spec.push_texts(texts, column)
        }
        other => Err(format!(
            "expected a number or an array of numbers, got {}",
            other.describe()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::tests::spec;

    fn read(text: &str) -> Result<Batch, CliError> {
        let specs = [
            spec("id", InputKind::Sparse, 1, None),
            spec("seq", InputKind::Sequence, 3, Some(0)),
            spec("x", InputKind::Dense, 2, None),
        ];
        let mut src = JsonLinesSource::new(text.as_bytes(), None, "t.jsonl".into(), &specs);
        let mut batch = Batch::new(&specs);
        src.fill(&mut batch, 10)?;
        Ok(batch)
    }

    #[test]
    fn values_keep_their_text() {
        let b = read(concat!(
            "\u{feff}{\"id\": 9007199254740993, \"seq\": [1, 2], \"x\": [0.1, 1e-3], \"label\": {}}\n",
            "  \n",
            "{\"x\": \"16777217 2.5\", \"seq\": null, \"id\": 12.0}\n",
        ))
        .unwrap();
        assert_eq!(b.origins, [1, 3]);
        assert_eq!(b.columns[0], InputColumn::Ids(vec![9007199254740993, 12]));
        assert_eq!(b.columns[1], InputColumn::Ids(vec![1, 2, 0, 0, 0, 0]));
        assert_eq!(
            b.columns[2],
            InputColumn::Floats(vec![0.1, 1e-3, 16777217.0, 2.5])
        );
    }

    #[test]
    fn errors_name_line_and_input() {
        let err = |text: &str| read(text).map(|_| ()).unwrap_err().to_string();
        assert_eq!(
            err("{\"id\": 1, \"id\": 2}"),
            "t.jsonl line 1: duplicate key \"id\""
        );
        assert!(err("{\"id\": 1,").starts_with("t.jsonl line 1: invalid JSON at column 9: "));
        assert!(err("[1]").contains("expected one JSON object per line"));
        assert!(err("{\"id\": 1, \"seq\": [], \"x\": [\"inf\", 1]}")
            .contains("input 'x': array items must be numbers, found a string"));
        assert!(err("{\"id\": true}")
            .contains("input 'id': expected a number or an array of numbers, got a boolean"));
        assert!(err("{\"id\": 1, \"seq\": []}").contains("input 'x': missing"));
    }
}
