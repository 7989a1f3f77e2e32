//! CSV and TSV input, read with the `csv` crate: a header row naming the model's inputs, then one
//! row per sample, streamed a batch at a time.

use std::io::Read;

use ple::InputKind;

use super::{split_cell, Batch, InputSpec, RowSource};
use crate::error::CliError;

/// Where one input's values are in a record.
#[derive(Debug, PartialEq)]
enum Binding {
    /// One cell holding all values.
    Cell(usize),
    /// Columns `name[0]`, `name[1]`, ... (empty cells count as absent for sequences).
    Columns(Vec<usize>),
}

pub struct CsvSource<R: Read> {
    reader: ::csv::Reader<QuoteTracker<R>>,
    record: ::csv::StringRecord,
    label: String,
    specs: Vec<InputSpec>,
    bindings: Vec<Binding>,
    header_len: usize,
    /// The input's size in bytes, when known (for progress).
    size: Option<u64>,
}

impl<R: Read> CsvSource<R> {
    /// Reads the header and binds every model input to its column(s).
    pub fn new(
        input: R,
        delimiter: u8,
        size: Option<u64>,
        label: String,
        specs: &[InputSpec],
    ) -> Result<Self, CliError> {
        let reader = ::csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false) // read below, to report its errors like a row's
            .flexible(true) // field counts are checked with a clearer message
            .from_reader(QuoteTracker::new(input, delimiter));
        let mut source = CsvSource {
            reader,
            record: ::csv::StringRecord::new(),
            label,
            specs: specs.to_vec(),
            bindings: Vec::new(),
            header_len: 0,
            size,
        };
        let Some(line) = source.next_record()? else {
            return Err(CliError::failed(format!(
                "{}: empty input (CSV needs a header row naming the model's inputs)",
                source.label
            )));
        };
        let header: Vec<String> = source.record.iter().map(|h| h.trim().to_string()).collect();
        let at = |e: String| CliError::failed(format!("{} line {line}: {e}", source.label));
        for (i, h) in header.iter().enumerate() {
            if header[..i].contains(h) {
                return Err(at(format!("column '{h}' appears twice")));
            }
        }
        let bindings = specs
            .iter()
            .map(|spec| bind(&header, spec))
            .collect::<Result<Vec<_>, _>>()
            .map_err(at)?;
        source.bindings = bindings;
        source.header_len = header.len();
        Ok(source)
    }

    /// Reads the next record that is not blank into `self.record`; returns its first line.
    fn next_record(&mut self) -> Result<Option<u64>, CliError> {
        loop {
            let more = self
                .reader
                .read_record(&mut self.record)
                .map_err(|e| read_error(&self.label, e))?;
            if let Some(line) = self.reader.get_ref().unclosed_quote() {
                return Err(CliError::failed(format!(
                    "{} line {line}: a quoted field is never closed",
                    self.label
                )));
            }
            if !more {
                return Ok(None);
            }
            // The csv crate skips empty lines; a line of spaces is blank too.
            if self.record.len() == 1 && self.record[0].trim().is_empty() {
                continue;
            }
            return Ok(Some(self.record.position().map_or(0, |p| p.line())));
        }
    }
}

fn read_error(label: &str, e: ::csv::Error) -> CliError {
    let message = match e.kind() {
        ::csv::ErrorKind::Utf8 { pos, err } => format!(
            "{label} line {}: is not UTF-8 text ({err})",
            pos.as_ref().map_or(0, |p| p.line())
        ),
        ::csv::ErrorKind::Io(err) => format!("cannot read {label}: {err}"),
        _ => format!("{label}: {e}"),
    };
    CliError::failed(message)
}

/// Finds the column(s) of `spec` in the header.
fn bind(header: &[String], spec: &InputSpec) -> Result<Binding, String> {
    let name = &*spec.name;
    let n = spec.values_per_sample;
    let cell = header.iter().position(|h| h == name);
    let prefix = format!("{name}[");
    let mut indexed: Vec<(usize, usize)> = Vec::new();
    for (column, h) in header.iter().enumerate() {
        if let Some(index) = h.strip_prefix(&prefix).and_then(|r| r.strip_suffix(']')) {
            let i: usize = index.parse().map_err(|_| {
                format!("column '{h}': the index must be a number, as in {name}[0]")
            })?;
            if i >= n {
                return Err(format!(
                    "column '{h}', but input '{name}' takes {n} value{} per row ({name}[0]..{name}[{}])",
                    if n == 1 { "" } else { "s" },
                    n - 1
                ));
            }
            indexed.push((i, column));
        }
    }
    match (cell, indexed.is_empty()) {
        (Some(_), false) => Err(format!(
            "input '{name}' has both a column '{name}' and columns '{name}[i]'; keep one form"
        )),
        (Some(c), true) => Ok(Binding::Cell(c)),
        (None, true) => Err(format!(
            "no column for model input '{name}' (expected a column '{name}'{}); the header has: {}",
            if n > 1 {
                format!(" or columns '{name}[0]'..'{name}[{}]'", n - 1)
            } else {
                String::new()
            },
            header.join(", ")
        )),
        (None, false) => {
            indexed.sort();
            for (want, &(i, _)) in indexed.iter().enumerate() {
                if i != want {
                    return Err(format!(
                        "input '{name}': column '{name}[{want}]' is missing"
                    ));
                }
            }
            let count = indexed.len();
            if count < n && spec.kind != InputKind::Sequence {
                return Err(format!(
                    "input '{name}': column '{name}[{count}]' is missing (it takes {n} values)"
                ));
            }
            Ok(Binding::Columns(
                indexed.into_iter().map(|(_, c)| c).collect(),
            ))
        }
    }
}

impl<R: Read> RowSource for CsvSource<R> {
    fn fill(&mut self, batch: &mut Batch, max: usize) -> Result<usize, CliError> {
        batch.clear();
        while batch.rows() < max {
            let Some(line) = self.next_record()? else {
                break;
            };
            let record = &self.record;
            if record.len() != self.header_len {
                return Err(CliError::failed(format!(
                    "{} line {line}: {} fields, but the header has {}",
                    self.label,
                    record.len(),
                    self.header_len
                )));
            }
            let inputs = self.specs.iter().zip(&self.bindings);
            for ((spec, binding), column) in inputs.zip(&mut batch.columns) {
                let pushed = match binding {
                    Binding::Cell(c) => spec.push_texts(split_cell(&record[*c]), column),
                    Binding::Columns(cs) => {
                        let cells = cs.iter().map(|&c| record[c].trim());
                        if spec.kind == InputKind::Sequence {
                            spec.push_texts(cells.filter(|c| !c.is_empty()), column)
                        } else {
                            spec.push_texts(cells, column)
                        }
                    }
                };
                pushed.map_err(|e| {
                    CliError::failed(format!(
                        "{} line {line}: input '{}': {e}",
                        self.label, spec.name
                    ))
                })?;
            }
            batch.origins.push(line);
        }
        Ok(batch.rows())
    }

    fn locate(&self, origin: u64) -> String {
        format!("{} line {origin}", self.label)
    }

    fn progress(&self) -> Option<f64> {
        let read = self.reader.position().byte();
        self.size.filter(|&s| s > 0).map(|s| read as f64 / s as f64)
    }
}

/// Watches the bytes the `csv` reader reads for a quoted field still open at the end of the
/// input. The crate accepts one (the field takes the rest of the file, BurntSushi/rust-csv#252);
/// the tool reports it instead, since it means a quote is missing.
struct QuoteTracker<R> {
    inner: R,
    delimiter: u8,
    state: QuoteState,
    bytes: u64,
    /// The line being read, and the one the open quoted field started on.
    line: u64,
    opened_on: u64,
    at_end: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: it closes the field unless another quote follows.
    QuoteInQuoted,
}

impl<R> QuoteTracker<R> {
    fn new(inner: R, delimiter: u8) -> Self {
        QuoteTracker {
            inner,
            delimiter,
            state: QuoteState::FieldStart,
            bytes: 0,
            line: 1,
            opened_on: 0,
            at_end: false,
        }
    }

    /// The line of a quoted field the input ended in, if it did.
    fn unclosed_quote(&self) -> Option<u64> {
        (self.at_end && self.state == QuoteState::Quoted).then_some(self.opened_on)
    }

    fn step(&mut self, byte: u8) {
        use QuoteState::*;
        if byte == b'\n' {
            self.line += 1;
        }
        let ends_field = byte == self.delimiter || byte == b'\n' || byte == b'\r';
        self.state = match (self.state, byte) {
            (Quoted, b'"') => QuoteInQuoted,
            (Quoted, _) | (QuoteInQuoted, b'"') => Quoted,
            (FieldStart, b'"') => {
                self.opened_on = self.line;
                Quoted
            }
            _ if ends_field => FieldStart,
            _ => Unquoted,
        };
    }
}

impl<R: Read> Read for QuoteTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.at_end = true;
        }
        let mut bytes = &buf[..n];
        if self.bytes == 0 {
            // The csv crate skips a UTF-8 byte order mark at the start.
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        self.bytes += n as u64;
        for &b in bytes {
            self.step(b);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::column::InputColumn;
    use crate::input::tests::spec;

    fn source<'t>(text: &'t str, specs: &[InputSpec]) -> Result<CsvSource<&'t [u8]>, CliError> {
        CsvSource::new(text.as_bytes(), b',', None, "t.csv".into(), specs)
    }

    #[test]
    fn quotes_blank_lines_and_indexed_columns() {
        let text = "\u{feff}a,\"b\",x[0],x[1],extra\n1,\"7 8\",0.5,1.5,\"q\"\"uoted,\n multi\"\n\n  \n2,\"\",1,2,z\r\n";
        let specs = [
            spec("a", InputKind::Sparse, 1, None),
            spec("b", InputKind::Sequence, 3, Some(0)),
            spec("x", InputKind::Dense, 2, None),
        ];
        let mut src = source(text, &specs).unwrap();
        assert_eq!(src.bindings[2], Binding::Columns(vec![2, 3]));
        let mut b = Batch::new(&specs);
        assert_eq!(src.fill(&mut b, 10).unwrap(), 2);
        assert_eq!(b.origins, [2, 6]);
        assert_eq!(b.columns[0], InputColumn::Ids(vec![1, 2]));
        assert_eq!(b.columns[1], InputColumn::Ids(vec![7, 8, 0, 0, 0, 0]));
        assert_eq!(b.columns[2], InputColumn::Floats(vec![0.5, 1.5, 1.0, 2.0]));
        assert_eq!(src.fill(&mut b, 10).unwrap(), 0);
    }

    #[test]
    fn an_unclosed_quote_is_an_error() {
        let specs = [spec("a", InputKind::Sparse, 1, None)];
        for (text, line) in [("a\n1\n\"2\n3\n", 3), ("a\n\"1\n", 2), ("\"a\n", 1)] {
            let e = match source(text, &specs) {
                Err(e) => e,
                Ok(mut src) => src.fill(&mut Batch::new(&specs), 10).unwrap_err(),
            };
            assert_eq!(
                e.to_string(),
                format!("t.csv line {line}: a quoted field is never closed"),
                "{text:?}"
            );
        }
        // Quotes that close, quotes doubled inside, and a quote inside an unquoted field are fine.
        let mut src = source("a\n\"1\"\n\"\"\"2\"\"\"\n3\"\n", &specs).unwrap();
        let e = src
            .fill(&mut Batch::new(&specs), 10)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3: input 'a': '\"2\"' is not an integer id"),
            "{e}"
        );
    }
}
