//! Input rows for `ple score`, turned into the per-input columns a session takes. One reader per
//! format (`csv.rs`, `jsonl.rs`, `npy.rs`); the rules they share (docs/CLI.md, "Input formats")
//! live in [`InputSpec`]:
//!
//! - Features are matched by name; columns or keys that are not model inputs are ignored.
//! - A feature's values are one cell / key (several values separated by spaces, `|`, `,` or `;`,
//!   optionally in `[...]`; a JSON array) or, in CSV, columns `name[0]`, `name[1]`, ...
//! - Dense features need exactly `width` floats, sparse features one id.
//! - Sequences may be shorter than `max_len`: they are padded with the feature's pad id when the
//!   model has one (pooling ignores padding, so this is exact); otherwise only with `--pad-id`,
//!   and without it a short sequence is an error. Longer sequences are always an error.
//! - Ids are integers (`12`, or `12.0` as pandas writes integer columns with missing values),
//!   parsed from their text, never through a float.

mod csv;
mod jsonl;
mod npy;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ple::{InputKind, Model};

use crate::args::PadId;
use crate::column::InputColumn;
use crate::error::CliError;

/// An input file format (`--input-format`, else the extension, else sniffed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Delimited text with a header row; the byte is the delimiter.
    Csv(u8),
    JsonLines,
    Npy,
}

impl InputFormat {
    pub fn from_name(name: &str) -> Option<InputFormat> {
        match name.trim().to_ascii_lowercase().as_str() {
            "csv" => Some(InputFormat::Csv(b',')),
            "tsv" => Some(InputFormat::Csv(b'\t')),
            "jsonl" | "ndjson" | "json" => Some(InputFormat::JsonLines),
            "npy" => Some(InputFormat::Npy),
            _ => None,
        }
    }

    fn from_extension(path: &Path) -> Option<InputFormat> {
        path.extension()
            .and_then(|e| e.to_str())
            .and_then(InputFormat::from_name)
    }

    /// From the first bytes: `.npy` magic, `{` or `[` (JSON lines), or else CSV.
    fn sniff(head: &[u8]) -> InputFormat {
        if head.starts_with(npy::MAGIC) {
            return InputFormat::Npy;
        }
        let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        match text.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{' | b'[') => InputFormat::JsonLines,
            _ => InputFormat::Csv(b','),
        }
    }
}

/// What one model input takes per sample, and how a short sequence is padded.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub name: Arc<str>,
    pub kind: InputKind,
    /// Values per sample: the width (dense), 1 (sparse) or max_len (sequence).
    pub values_per_sample: usize,
    /// The id a short sequence is padded with: the model's pad id, else `--pad-id`, else `None`
    /// (a short sequence is an error).
    pub pad: Option<i64>,
    /// The model itself masks a pad id for this sequence: text rows go to the session ragged.
    pub model_pads: bool,
}

impl InputSpec {
    /// The model's inputs in order, with the `--pad-id` values applied.
    pub fn for_model(model: &Model, pad_ids: &[PadId]) -> Result<Vec<InputSpec>, CliError> {
        for name in pad_ids.iter().filter_map(|p| p.input.as_deref()) {
            match model.inputs().iter().find(|f| &*f.name == name) {
                None => {
                    return Err(CliError::usage(format!(
                        "--pad-id: the model has no input named '{name}'"
                    )))
                }
                Some(f) if f.kind != InputKind::Sequence => {
                    return Err(CliError::usage(format!(
                        "--pad-id: input '{name}' is {}, not a sequence",
                        f.kind.name()
                    )))
                }
                Some(_) => {}
            }
        }
        // The last `--pad-id NAME=ID` for an input wins, then the last plain `--pad-id ID`.
        let given = |name: &str| {
            let named = pad_ids
                .iter()
                .rev()
                .find(|p| p.input.as_deref() == Some(name));
            let any = pad_ids.iter().rev().find(|p| p.input.is_none());
            named.or(any).map(|p| p.id)
        };
        Ok(model
            .inputs()
            .iter()
            .map(|f| InputSpec {
                name: f.name.clone(),
                kind: f.kind,
                values_per_sample: f.values_per_sample(),
                pad: match f.kind {
                    InputKind::Sequence => f.pad_id.or_else(|| given(&f.name)),
                    _ => None,
                },
                model_pads: f.kind == InputKind::Sequence && f.pad_id.is_some(),
            })
            .collect())
    }

    pub fn empty_column(&self) -> InputColumn {
        match self.kind {
            InputKind::Dense => InputColumn::Floats(Vec::new()),
            // The model masks its pad id: rows go to the session ragged, unpadded (the same
            // scores, bit for bit; padding would cost max_len ids per row).
            InputKind::Sequence if self.model_pads => InputColumn::Ragged {
                ids: Vec::new(),
                offsets: vec![0],
            },
            InputKind::Sparse | InputKind::Sequence => InputColumn::Ids(Vec::new()),
        }
    }

    /// Appends one sample given as value texts; on error `column` is left as it was.
    pub fn push_texts<'t>(
        &self,
        texts: impl IntoIterator<Item = &'t str>,
        column: &mut InputColumn,
    ) -> Result<(), String> {
        let start = column.len();
        let mut got = 0usize;
        let parsed = texts.into_iter().try_for_each(|t| {
            got += 1;
            if got > self.values_per_sample {
                return Ok(()); // counted, reported by `complete`
            }
            match column {
                InputColumn::Floats(v) => v.push(parse_float(t)?),
                InputColumn::Ids(v) | InputColumn::Ragged { ids: v, .. } => v.push(parse_id(t)?),
                InputColumn::RaggedFloats { .. } => unreachable!("only random columns"),
            }
            Ok(())
        });
        let result = parsed.and_then(|()| self.complete(got, column));
        if result.is_err() {
            column.truncate(start);
        }
        result
    }

    /// Appends one sample of ids (a row of a `.npy` array), padding a short sequence.
    pub fn push_ids(&self, ids: &[i64], column: &mut InputColumn) -> Result<(), String> {
        if let InputColumn::Ids(v) = column {
            v.extend_from_slice(ids);
        }
        self.complete(ids.len(), column)
    }

    /// Checks the count of values `got` just appended and pads a short sequence.
    fn complete(&self, got: usize, column: &mut InputColumn) -> Result<(), String> {
        let n = self.values_per_sample;
        if let (InputColumn::Ragged { ids, offsets }, true) = (&mut *column, got <= n) {
            offsets.push(ids.len() as i64);
            return Ok(());
        }
        if got == n {
            return Ok(());
        }
        match self.kind {
            InputKind::Dense | InputKind::Sparse if got == 0 => Err(format!(
                "missing value (expected {})",
                match (self.kind, n) {
                    (InputKind::Sparse, _) => "one id".to_string(),
                    (_, 1) => "one number".to_string(),
                    (_, n) => format!("{n} numbers"),
                }
            )),
            InputKind::Dense if n == 1 => Err(format!("expected one number, got {got} values")),
            InputKind::Dense => Err(format!(
                "expected {n} numbers (the feature's width), got {got}"
            )),
            InputKind::Sparse => Err(format!("expected one id, got {got} values")),
            InputKind::Sequence if got > n => Err(format!(
                "{got} ids, but max_len is {n}: shorten the sequence to at most {n} ids (the runtime does not choose which to drop)"
            )),
            InputKind::Sequence => match (self.pad, column) {
                (Some(pad), InputColumn::Ids(v)) => {
                    v.resize(v.len() + n - got, pad);
                    Ok(())
                }
                _ => Err(format!(
                    "{got} ids, but max_len is {n} and the model has no pad id: give exactly {n} ids, or pass --pad-id ID (or --pad-id {}=ID) with the id used for padding in training",
                    self.name
                )),
            },
        }
    }
}

pub fn parse_float(text: &str) -> Result<f32, String> {
    let t = text.trim();
    t.parse::<f32>().map_err(|_| {
        if t.is_empty() {
            "empty value where a number is expected".to_string()
        } else {
            format!("'{t}' is not a number")
        }
    })
}

/// Whole floats below 2^53 are exact in f64: the largest `12.0`-style id accepted.
const MAX_FLOAT_ID: f64 = 9_007_199_254_740_992.0;

pub fn parse_id(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(id) = t.parse::<i64>() {
        return Ok(id);
    }
    // `12.0` (pandas writes integer columns holding NaN as floats).
    match t.parse::<f64>() {
        Ok(x) if x.fract() == 0.0 && x.abs() < MAX_FLOAT_ID => Ok(x as i64),
        _ if t.is_empty() => Err("empty value where an id is expected".into()),
        _ => Err(format!("'{t}' is not an integer id")),
    }
}

/// Splits a cell holding several values: optional `[...]`, separators whitespace `|` `,` `;`.
pub fn split_cell(cell: &str) -> impl Iterator<Item = &str> {
    let t = cell.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(t);
    t.split(|c: char| c.is_whitespace() || matches!(c, '|' | ',' | ';'))
        .filter(|s| !s.is_empty())
}

/// A batch of rows read from the input.
pub struct Batch {
    /// One column per model input.
    pub columns: Vec<InputColumn>,
    /// Where each row came from (line number for text, row index for `.npy`), for errors.
    pub origins: Vec<u64>,
}

impl Batch {
    pub fn new(specs: &[InputSpec]) -> Batch {
        Batch {
            columns: specs.iter().map(InputSpec::empty_column).collect(),
            origins: Vec::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.origins.len()
    }

    fn clear(&mut self) {
        for c in &mut self.columns {
            c.truncate(0);
        }
        self.origins.clear();
    }
}

/// Rows from one input, a batch at a time.
pub trait RowSource {
    /// Replaces the contents of `batch` with up to `max` rows; 0 rows means the input is done.
    fn fill(&mut self, batch: &mut Batch, max: usize) -> Result<usize, CliError>;
    /// Where row `origin` came from: `data.csv line 7`, `in/ row 6`.
    fn locate(&self, origin: u64) -> String;
    /// Fraction of the input consumed, when known.
    fn progress(&self) -> Option<f64>;
}

/// Opens the `--input` values as a row source.
pub fn open(
    inputs: &[String],
    format: Option<InputFormat>,
    specs: &[InputSpec],
) -> Result<Box<dyn RowSource>, CliError> {
    let is_input = |name: &str| specs.iter().any(|s| &*s.name == name);
    let named: Vec<(&str, &str)> = inputs
        .iter()
        .filter_map(|i| i.split_once('=').filter(|(n, _)| is_input(n)))
        .collect();
    if inputs.len() > 1 || !named.is_empty() {
        return open_named_npy(inputs, &named, format, specs);
    }
    let input = inputs[0].as_str();
    if input != "-" && Path::new(input).is_dir() {
        return open_npy_dir(input, format, specs);
    }

    // One file (or stdin).
    let (reader, size, label): (Box<dyn Read>, Option<u64>, String) = if input == "-" {
        (Box::new(std::io::stdin()), None, "stdin".into())
    } else {
        let f =
            File::open(input).map_err(|e| CliError::failed(format!("cannot read {input}: {e}")))?;
        let size = f.metadata().ok().map(|m| m.len());
        (Box::new(f), size, input.to_string())
    };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let format = match format.or_else(|| InputFormat::from_extension(Path::new(input))) {
        Some(f) => f,
        None => {
            let head = reader
                .fill_buf()
                .map_err(|e| CliError::failed(format!("cannot read {label}: {e}")))?;
            InputFormat::sniff(head)
        }
    };
    match format {
        InputFormat::Npy => {
            if specs.len() != 1 {
                let names: Vec<&str> = specs.iter().map(|s| &*s.name).collect();
                return Err(CliError::usage(format!(
                    "a single .npy file feeds a model with one input; this model has {} ({}): pass a directory of in_<feature>.npy files or --input NAME=FILE.npy for each",
                    specs.len(),
                    names.join(", ")
                )));
            }
            let mut bytes = Vec::new();
            reader
                .read_to_end(&mut bytes)
                .map_err(|e| CliError::failed(format!("cannot read {label}: {e}")))?;
            let array = npy::NpyArray::parse(bytes)
                .map_err(|e| CliError::failed(format!("{label}: {e}")))?;
            Ok(Box::new(npy::NpySource::new(
                vec![(array, label.clone())],
                specs,
                &label,
            )?))
        }
        InputFormat::Csv(delimiter) => Ok(Box::new(csv::CsvSource::new(
            reader, delimiter, size, label, specs,
        )?)),
        InputFormat::JsonLines => Ok(Box::new(jsonl::JsonLinesSource::new(
            reader, size, label, specs,
        ))),
    }
}

/// `--input NAME=FILE.npy`, once per model input.
fn open_named_npy(
    inputs: &[String],
    named: &[(&str, &str)],
    format: Option<InputFormat>,
    specs: &[InputSpec],
) -> Result<Box<dyn RowSource>, CliError> {
    if named.len() != inputs.len() {
        return Err(CliError::usage(
            "several --input values must all be NAME=FILE.npy, one per model input",
        ));
    }
    if format.is_some_and(|f| f != InputFormat::Npy) {
        return Err(CliError::usage("--input NAME=FILE takes .npy files"));
    }
    let mut files = Vec::with_capacity(specs.len());
    for spec in specs {
        let given: Vec<&str> = named
            .iter()
            .filter(|(n, _)| *n == &*spec.name)
            .map(|&(_, f)| f)
            .collect();
        match given.as_slice() {
            [f] => files.push(PathBuf::from(f)),
            [] => {
                return Err(CliError::usage(format!(
                    "no --input {}=FILE.npy for model input '{}' (every input needs one)",
                    spec.name, spec.name
                )))
            }
            _ => {
                return Err(CliError::usage(format!(
                    "--input {}= given more than once",
                    spec.name
                )))
            }
        }
    }
    Ok(Box::new(npy::NpySource::load(
        &files,
        specs,
        "the .npy inputs",
    )?))
}

/// `--input DIR`: `DIR/in_<feature>.npy` for every model input.
fn open_npy_dir(
    dir: &str,
    format: Option<InputFormat>,
    specs: &[InputSpec],
) -> Result<Box<dyn RowSource>, CliError> {
    if format.is_some_and(|f| f != InputFormat::Npy) {
        return Err(CliError::usage(
            "--input DIR reads in_<feature>.npy files; it cannot be CSV or JSON",
        ));
    }
    let files: Vec<PathBuf> = specs
        .iter()
        .map(|s| Path::new(dir).join(format!("in_{}.npy", s.name)))
        .collect();
    for (spec, f) in specs.iter().zip(&files) {
        if !f.is_file() {
            return Err(CliError::failed(format!(
                "{dir}: no {} for model input '{}' (a directory input holds in_<feature>.npy for every input)",
                f.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
                spec.name
            )));
        }
    }
    Ok(Box::new(npy::NpySource::load(
        &files,
        specs,
        &format!("{dir}/"),
    )?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn spec(
        name: &str,
        kind: InputKind,
        values_per_sample: usize,
        pad: Option<i64>,
    ) -> InputSpec {
        InputSpec {
            name: name.into(),
            kind,
            values_per_sample,
            pad,
            model_pads: false,
        }
    }

    #[test]
    fn cells_and_padding() {
        assert_eq!(
            split_cell(" [1, 2 |3;4  5] ").collect::<Vec<_>>(),
            ["1", "2", "3", "4", "5"]
        );
        let s = spec("f", InputKind::Sequence, 4, Some(0));
        let mut c = InputColumn::Ids(vec![]);
        s.push_texts(split_cell("7 8"), &mut c).unwrap();
        s.push_texts(split_cell(""), &mut c).unwrap();
        assert_eq!(c, InputColumn::Ids(vec![7, 8, 0, 0, 0, 0, 0, 0]));
        assert!(s.push_texts(split_cell("1 2 3 4 5"), &mut c).is_err());
        let strict = spec("f", InputKind::Sequence, 2, None);
        let e = strict.push_texts(split_cell("1"), &mut c).unwrap_err();
        assert!(e.contains("--pad-id"), "{e}");
        assert_eq!(c.len(), 8, "a failed row leaves the column as it was");
        // A model that masks its pad id: rows stay ragged; a failed row leaves no trace.
        let r = InputSpec {
            model_pads: true,
            ..spec("f", InputKind::Sequence, 4, Some(0))
        };
        let mut c = r.empty_column();
        r.push_texts(split_cell("7 8"), &mut c).unwrap();
        r.push_texts(split_cell(""), &mut c).unwrap();
        assert!(r.push_texts(split_cell("1 2 3 4 5"), &mut c).is_err());
        assert!(r.push_texts(split_cell("1 x"), &mut c).is_err());
        r.push_texts(split_cell("1 2 3 4"), &mut c).unwrap();
        let ragged = InputColumn::Ragged {
            ids: vec![7, 8, 1, 2, 3, 4],
            offsets: vec![0, 2, 2, 6],
        };
        assert_eq!(c, ragged);
        c.truncate(0);
        assert_eq!(c, r.empty_column());
        let d = spec("f", InputKind::Dense, 2, None);
        let mut f = InputColumn::Floats(vec![]);
        assert!(d.push_texts(split_cell("1.5"), &mut f).is_err());
        assert!(d.push_texts(split_cell("1.5 x"), &mut f).is_err());
        assert_eq!(f, InputColumn::Floats(vec![]));
        d.push_texts(split_cell("1.5 -2e-3"), &mut f).unwrap();
        assert_eq!(parse_id("12.0").unwrap(), 12);
        assert!(parse_id("1.5").is_err());
        assert_eq!(parse_id("-9223372036854775808").unwrap(), i64::MIN);
        assert_eq!(parse_id("9007199254740993").unwrap(), 9007199254740993);
    }

    #[test]
    fn sniffs_formats() {
        assert_eq!(InputFormat::sniff(b"\x93NUMPY\x01\x00"), InputFormat::Npy);
        assert_eq!(
            InputFormat::sniff(b"\xEF\xBB\xBF {\"a\": 1}"),
            InputFormat::JsonLines
        );
        assert_eq!(InputFormat::sniff(b"a,b\n1,2\n"), InputFormat::Csv(b','));
    }
}
