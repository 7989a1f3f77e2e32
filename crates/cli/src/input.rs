//! Input rows for `ple score`: CSV (or TSV) with a header, JSON lines, and `.npy` arrays, turned
//! into the per-feature columns a session takes. The rules (docs/CLI.md, "Input formats"):
//!
//! - Features are matched by name; columns or keys that are not model inputs are ignored.
//! - A feature's values are one cell / key (several values separated by spaces, `|`, `,` or `;`,
//!   optionally in `[...]`; a JSON array) or, in CSV, columns `name[0]`, `name[1]`, ...
//! - Dense features need exactly `width` floats, sparse features one id.
//! - Sequences may be shorter than `max_len`: they are padded with the feature's pad id when the
//!   model has one (pooling ignores padding, so this is exact); otherwise only with `--pad-id`,
//!   and without it a short sequence is an error. Longer sequences are always an error.
//! - Ids are integers (`12`, or `12.0` as pandas writes integer columns with missing values).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::json::{self, Json};
use super::rand::Column;
use super::CliError;
use ple::{InputKind, Model};
use ple_testkit::npy::NpyArray;

/// An input file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Delimited text with a header row; the byte is the delimiter.
    Csv(u8),
    JsonLines,
    Npy,
}

impl Format {
    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv(b',')),
            "tsv" => Some(Format::Csv(b'\t')),
            "jsonl" | "ndjson" | "json" => Some(Format::JsonLines),
            "npy" => Some(Format::Npy),
            _ => None,
        }
    }

    fn from_extension(path: &Path) -> Option<Format> {
        path.extension()
            .and_then(|e| e.to_str())
            .and_then(Format::from_name)
    }

    /// From the first bytes: `.npy` magic, `{` (JSON lines), or else CSV.
    fn sniff(head: &[u8]) -> Format {
        if head.starts_with(b"\x93NUMPY") {
            return Format::Npy;
        }
        let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        match text.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{' | b'[') => Format::JsonLines,
            _ => Format::Csv(b','),
        }
    }
}

/// What one model input needs per sample, and how short sequences are padded.
#[derive(Debug, Clone)]
pub struct Slot {
    pub name: Arc<str>,
    pub kind: InputKind,
    /// Values per sample (width, 1, or max_len).
    pub n: usize,
    /// The id short sequences are padded with: the model's pad id, else `--pad-id`, else `None`
    /// (short sequences are an error).
    pub pad: Option<i64>,
}

impl Slot {
    pub fn for_model(
        model: &Model,
        pad_ids: &[(Option<String>, i64)],
    ) -> Result<Vec<Slot>, CliError> {
        for (name, _) in pad_ids {
            if let Some(name) = name {
                match model.inputs().iter().find(|f| &*f.name == name.as_str()) {
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
                    _ => {}
                }
            }
        }
        Ok(model
            .inputs()
            .iter()
            .map(|f| {
                let given = pad_ids
                    .iter()
                    .rev()
                    .find(|(n, _)| n.as_deref() == Some(&*f.name))
                    .or_else(|| pad_ids.iter().rev().find(|(n, _)| n.is_none()))
                    .map(|&(_, id)| id);
                Slot {
                    name: f.name.clone(),
                    kind: f.kind,
                    n: f.values_per_sample(),
                    pad: if f.kind == InputKind::Sequence {
                        f.pad_id.or(given)
                    } else {
                        None
                    },
                }
            })
            .collect())
    }

    pub fn empty_column(&self) -> Column {
        match self.kind {
            InputKind::Dense => Column::Floats(Vec::new()),
            _ => Column::Ids(Vec::new()),
        }
    }

    /// Appends one sample given as value texts.
    fn push<'t>(
        &self,
        tokens: impl IntoIterator<Item = &'t str>,
        col: &mut Column,
    ) -> Result<(), String> {
        let start = col_len(col);
        let r = self.push_inner(tokens, col);
        if r.is_err() {
            truncate(col, start);
        }
        r
    }

    fn push_inner<'t>(
        &self,
        tokens: impl IntoIterator<Item = &'t str>,
        col: &mut Column,
    ) -> Result<(), String> {
        let mut got = 0usize;
        match col {
            Column::Floats(v) => {
                for t in tokens {
                    got += 1;
                    if got <= self.n {
                        v.push(parse_float(t)?);
                    }
                }
            }
            Column::Ids(v) => {
                for t in tokens {
                    got += 1;
                    if got <= self.n {
                        v.push(parse_id(t)?);
                    }
                }
            }
        }
        self.finish(got, col)
    }

    /// Checks the count of values `got` and pads a short sequence.
    fn finish(&self, got: usize, col: &mut Column) -> Result<(), String> {
        if got == self.n {
            return Ok(());
        }
        match self.kind {
            InputKind::Dense | InputKind::Sparse if got == 0 => Err(format!(
                "missing value (expected {})",
                match (self.kind, self.n) {
                    (InputKind::Sparse, _) => "one id".to_string(),
                    (_, 1) => "one number".to_string(),
                    (_, n) => format!("{n} numbers"),
                }
            )),
            InputKind::Dense if self.n == 1 => Err(format!("expected one number, got {got} values")),
            InputKind::Dense => Err(format!("expected {} numbers (the feature's width), got {got}", self.n)),
            InputKind::Sparse => Err(format!("expected one id, got {got} values")),
            InputKind::Sequence if got > self.n => Err(format!(
                "{got} ids, but max_len is {}: shorten the sequence to at most {} ids (the runtime does not choose which to drop)",
                self.n, self.n
            )),
            InputKind::Sequence => match (self.pad, col) {
                (Some(pad), Column::Ids(v)) => {
                    v.resize(v.len() + self.n - got, pad);
                    Ok(())
                }
                _ => Err(format!(
                    "{got} ids, but max_len is {} and the model has no pad id: give exactly {} ids, or pass --pad-id ID (or --pad-id {}=ID) with the id used for padding in training",
                    self.n, self.n, self.name
                )),
            },
        }
    }
}

fn col_len(c: &Column) -> usize {
    match c {
        Column::Ids(v) => v.len(),
        Column::Floats(v) => v.len(),
    }
}

fn truncate(c: &mut Column, n: usize) {
    match c {
        Column::Ids(v) => v.truncate(n),
        Column::Floats(v) => v.truncate(n),
    }
}

pub fn parse_float(t: &str) -> Result<f32, String> {
    let t = t.trim();
    t.parse::<f32>().map_err(|_| {
        if t.is_empty() {
            "empty value where a number is expected".to_string()
        } else {
            format!("'{t}' is not a number")
        }
    })
}

pub fn parse_id(t: &str) -> Result<i64, String> {
    let t = t.trim();
    if let Ok(id) = t.parse::<i64>() {
        return Ok(id);
    }
    // `12.0` (pandas writes integer columns holding NaN as floats); exact below 2^53 only.
    match t.parse::<f64>() {
        Ok(x) if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 => Ok(x as i64),
        _ if t.is_empty() => Err("empty value where an id is expected".into()),
        _ => Err(format!("'{t}' is not an integer id")),
    }
}

/// Splits a cell holding several values: optional `[...]`, separators whitespace `|` `,` `;`.
fn split_cell(cell: &str) -> impl Iterator<Item = &str> {
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
    pub cols: Vec<Column>,
    /// Where each row came from (line number for text, row index for `.npy`), for errors.
    pub origin: Vec<u64>,
}

impl Batch {
    pub fn new(slots: &[Slot]) -> Batch {
        Batch {
            cols: slots.iter().map(Slot::empty_column).collect(),
            origin: Vec::new(),
        }
    }
    pub fn rows(&self) -> usize {
        self.origin.len()
    }
    fn clear(&mut self) {
        for c in &mut self.cols {
            truncate(c, 0);
        }
        self.origin.clear();
    }
}

/// Rows from some input, a batch at a time.
pub trait Source {
    /// Replaces the contents of `batch` with up to `max` rows; 0 rows means the input is done.
    fn fill(&mut self, batch: &mut Batch, max: usize) -> Result<usize, CliError>;
    /// Where row `origin` came from: `data.csv line 7`, `row 6 of the .npy inputs`.
    fn locate(&self, origin: u64) -> String;
    /// Fraction of the input consumed, when known.
    fn progress(&self) -> Option<f64>;
}

/// Opens `--input` values as a row source.
pub fn open(
    inputs: &[&str],
    format: Option<Format>,
    slots: &[Slot],
) -> Result<Box<dyn Source>, CliError> {
    let names: Vec<&str> = slots.iter().map(|s| &*s.name).collect();
    let named: Vec<(&str, &str)> = inputs
        .iter()
        .filter_map(|i| i.split_once('=').filter(|(n, _)| names.contains(n)))
        .collect();
    if inputs.len() > 1 || !named.is_empty() {
        if named.len() != inputs.len() {
            return Err(CliError::usage(
                "several --input values must all be NAME=FILE.npy, one per model input",
            ));
        }
        if format.is_some_and(|f| f != Format::Npy) {
            return Err(CliError::usage("--input NAME=FILE takes .npy files"));
        }
        let mut files = Vec::new();
        for slot in slots {
            let given: Vec<&str> = named
                .iter()
                .filter(|(n, _)| *n == &*slot.name)
                .map(|&(_, f)| f)
                .collect();
            match given.as_slice() {
                [f] => files.push(PathBuf::from(f)),
                [] => {
                    return Err(CliError::usage(format!(
                        "no --input {}=FILE.npy for model input '{}' (every input needs one)",
                        slot.name, slot.name
                    )))
                }
                _ => {
                    return Err(CliError::usage(format!(
                        "--input {}= given more than once",
                        slot.name
                    )))
                }
            }
        }
        return Ok(Box::new(NpySource::load(&files, slots, "the .npy inputs")?));
    }
    let input = inputs[0];
    if input != "-" && Path::new(input).is_dir() {
        if format.is_some_and(|f| f != Format::Npy) {
            return Err(CliError::usage(
                "--input DIR reads in_<feature>.npy files; it cannot be CSV or JSON",
            ));
        }
        let dir = Path::new(input);
        let files: Vec<PathBuf> = slots
            .iter()
            .map(|s| dir.join(format!("in_{}.npy", s.name)))
            .collect();
        for (slot, f) in slots.iter().zip(&files) {
            if !f.is_file() {
                return Err(CliError::failed(format!(
                    "{input}: no {} for model input '{}' (a directory input holds in_<feature>.npy for every input)",
                    f.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
                    slot.name
                )));
            }
        }
        return Ok(Box::new(NpySource::load(
            &files,
            slots,
            &format!("{input}/"),
        )?));
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
    let format = match format.or_else(|| Format::from_extension(Path::new(input))) {
        Some(f) => f,
        None => {
            let head = reader
                .fill_buf()
                .map_err(|e| CliError::failed(format!("cannot read {label}: {e}")))?;
            Format::sniff(head)
        }
    };
    match format {
        Format::Npy => {
            if slots.len() != 1 {
                return Err(CliError::usage(format!(
                    "a single .npy file feeds a model with one input; this model has {} ({}): pass a directory of in_<feature>.npy files or --input NAME=FILE.npy for each",
                    slots.len(),
                    names.join(", ")
                )));
            }
            let mut bytes = Vec::new();
            reader
                .read_to_end(&mut bytes)
                .map_err(|e| CliError::failed(format!("cannot read {label}: {e}")))?;
            let arr = ple_testkit::npy::parse(&bytes)
                .map_err(|e| CliError::failed(format!("{label}: {e}")))?;
            Ok(Box::new(NpySource::from_arrays(
                vec![(arr, label.clone())],
                slots,
                &label,
            )?))
        }
        Format::Csv(delim) => Ok(Box::new(CsvSource::new(reader, delim, size, label, slots)?)),
        Format::JsonLines => Ok(Box::new(JsonSource {
            lines: LineReader::new(reader, size),
            label,
            slots: slots.to_vec(),
        })),
    }
}

/// Lines of a text input with their numbers and the bytes consumed.
struct LineReader<R> {
    r: BufReader<R>,
    line: u64,
    bytes: u64,
    size: Option<u64>,
    buf: String,
}

impl<R: Read> LineReader<R> {
    fn new(r: BufReader<R>, size: Option<u64>) -> Self {
        LineReader {
            r,
            line: 0,
            bytes: 0,
            size,
            buf: String::new(),
        }
    }

    /// The next line without its terminator into `self.buf`; false at the end.
    fn next(&mut self, label: &str) -> Result<bool, CliError> {
        self.buf.clear();
        let n = self.r.read_line(&mut self.buf).map_err(|e| {
            let what = if e.kind() == std::io::ErrorKind::InvalidData {
                "is not UTF-8 text"
            } else {
                "cannot be read"
            };
            CliError::failed(format!("{label} line {}: {what} ({e})", self.line + 1))
        })?;
        if n == 0 {
            return Ok(false);
        }
        self.line += 1;
        self.bytes += n as u64;
        if self.buf.ends_with('\n') {
            self.buf.pop();
            if self.buf.ends_with('\r') {
                self.buf.pop();
            }
        }
        if self.line == 1 && self.buf.starts_with('\u{feff}') {
            self.buf.drain(..3);
        }
        Ok(true)
    }

    fn progress(&self) -> Option<f64> {
        self.size
            .filter(|&s| s > 0)
            .map(|s| self.bytes as f64 / s as f64)
    }
}

/// Where a feature's values are in a CSV record.
enum Binding {
    /// One cell holding all values.
    Cell(usize),
    /// Columns `name[0]`, `name[1]`, ... (cells that are empty count as absent for sequences).
    Columns(Vec<usize>),
}

struct CsvSource<R> {
    lines: LineReader<R>,
    delim: u8,
    label: String,
    slots: Vec<Slot>,
    bindings: Vec<Binding>,
    n_fields: usize,
    fields: Vec<String>,
}

impl<R: Read> CsvSource<R> {
    fn new(
        r: BufReader<R>,
        delim: u8,
        size: Option<u64>,
        label: String,
        slots: &[Slot],
    ) -> Result<Self, CliError> {
        let mut src = CsvSource {
            lines: LineReader::new(r, size),
            delim,
            label,
            slots: slots.to_vec(),
            bindings: Vec::new(),
            n_fields: 0,
            fields: Vec::new(),
        };
        let mut header = Vec::new();
        if src.record(&mut header)?.is_none() {
            return Err(CliError::failed(format!(
                "{}: empty input (CSV needs a header row naming the model's inputs)",
                src.label
            )));
        }
        let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
        for (i, h) in header.iter().enumerate() {
            if header[..i].contains(h) {
                return Err(CliError::failed(format!(
                    "{} line 1: column '{h}' appears twice",
                    src.label
                )));
            }
        }
        for slot in slots {
            src.bindings.push(
                bind(&header, slot)
                    .map_err(|e| CliError::failed(format!("{} line 1: {e}", src.label)))?,
            );
        }
        src.n_fields = header.len();
        Ok(src)
    }

    /// Reads one record (quoted fields may span lines); returns its first line number.
    fn record(&mut self, fields: &mut Vec<String>) -> Result<Option<u64>, CliError> {
        fields.clear();
        // Skip blank lines.
        loop {
            if !self.lines.next(&self.label)? {
                return Ok(None);
            }
            if !self.lines.buf.trim().is_empty() {
                break;
            }
        }
        let first = self.lines.line;
        let d = self.delim;
        let mut field = String::new();
        let mut pos = 0usize;
        loop {
            let line = self.lines.buf.as_bytes();
            // At the start of a field.
            if line.get(pos) == Some(&b'"') {
                pos += 1;
                // Quoted: until the closing quote, possibly on a later line.
                loop {
                    let line = self.lines.buf.as_bytes();
                    match line[pos..].iter().position(|&b| b == b'"') {
                        Some(q) => {
                            field.push_str(&self.lines.buf[pos..pos + q]);
                            pos += q + 1;
                            if line.get(pos) == Some(&b'"') {
                                field.push('"');
                                pos += 1;
                                continue;
                            }
                            break;
                        }
                        None => {
                            field.push_str(&self.lines.buf[pos..]);
                            field.push('\n');
                            if !self.lines.next(&self.label)? {
                                return Err(CliError::failed(format!(
                                    "{} line {first}: a quoted field is never closed",
                                    self.label
                                )));
                            }
                            pos = 0;
                        }
                    }
                }
                let line = self.lines.buf.as_bytes();
                match line.get(pos) {
                    None => {
                        fields.push(std::mem::take(&mut field));
                        return Ok(Some(first));
                    }
                    Some(&b) if b == d => {
                        pos += 1;
                        fields.push(std::mem::take(&mut field));
                    }
                    Some(_) => {
                        return Err(CliError::failed(format!(
                            "{} line {}: text after a closing quote (a quote inside a quoted field is written \"\")",
                            self.label, self.lines.line
                        )))
                    }
                }
            } else {
                let rest = &line[pos..];
                match rest.iter().position(|&b| b == d) {
                    Some(e) => {
                        fields.push(self.lines.buf[pos..pos + e].to_string());
                        pos += e + 1;
                    }
                    None => {
                        fields.push(self.lines.buf[pos..].to_string());
                        return Ok(Some(first));
                    }
                }
            }
        }
    }
}

fn bind(header: &[String], slot: &Slot) -> Result<Binding, String> {
    let name = &*slot.name;
    let cell = header.iter().position(|h| h == name);
    let prefix = format!("{name}[");
    let mut indexed: Vec<(usize, usize)> = Vec::new();
    for (col, h) in header.iter().enumerate() {
        if let Some(idx) = h.strip_prefix(&prefix).and_then(|r| r.strip_suffix(']')) {
            let i: usize = idx.parse().map_err(|_| {
                format!("column '{h}': the index must be a number, as in {name}[0]")
            })?;
            if i >= slot.n {
                return Err(format!(
                    "column '{h}', but input '{name}' takes {} value{} per row ({name}[0]..{name}[{}])",
                    slot.n,
                    if slot.n == 1 { "" } else { "s" },
                    slot.n - 1
                ));
            }
            indexed.push((i, col));
        }
    }
    match (cell, indexed.is_empty()) {
        (Some(_), false) => Err(format!(
            "input '{name}' has both a column '{name}' and columns '{name}[i]'; keep one form"
        )),
        (Some(c), true) => Ok(Binding::Cell(c)),
        (None, true) => Err(format!(
            "no column for model input '{name}' (expected a column '{name}'{}); the header has: {}",
            if slot.n > 1 {
                format!(" or columns '{name}[0]'..'{name}[{}]'", slot.n - 1)
            } else {
                String::new()
            },
            header.join(", ")
        )),
        (None, false) => {
            indexed.sort();
            let count = indexed.len();
            for (want, &(i, _)) in indexed.iter().enumerate() {
                if i != want {
                    return Err(format!(
                        "input '{name}': column '{name}[{want}]' is missing"
                    ));
                }
            }
            if count < slot.n && slot.kind != InputKind::Sequence {
                return Err(format!(
                    "input '{name}': column '{name}[{count}]' is missing (it takes {} values)",
                    slot.n
                ));
            }
            Ok(Binding::Columns(
                indexed.into_iter().map(|(_, c)| c).collect(),
            ))
        }
    }
}

impl<R: Read> Source for CsvSource<R> {
    fn fill(&mut self, batch: &mut Batch, max: usize) -> Result<usize, CliError> {
        batch.clear();
        let mut fields = std::mem::take(&mut self.fields);
        while batch.rows() < max {
            let Some(line) = self.record(&mut fields)? else {
                break;
            };
            if fields.len() != self.n_fields {
                return Err(CliError::failed(format!(
                    "{} line {line}: {} fields, but the header has {}",
                    self.label,
                    fields.len(),
                    self.n_fields
                )));
            }
            for ((slot, binding), col) in self.slots.iter().zip(&self.bindings).zip(&mut batch.cols)
            {
                let r = match binding {
                    Binding::Cell(c) => slot.push(split_cell(&fields[*c]), col),
                    Binding::Columns(cs) => {
                        let cells = cs.iter().map(|&c| fields[c].trim());
                        if slot.kind == InputKind::Sequence {
                            slot.push(cells.filter(|c| !c.is_empty()), col)
                        } else {
                            slot.push(cells, col)
                        }
                    }
                };
                r.map_err(|e| {
                    CliError::failed(format!(
                        "{} line {line}: input '{}': {e}",
                        self.label, slot.name
                    ))
                })?;
            }
            batch.origin.push(line);
        }
        self.fields = fields;
        Ok(batch.rows())
    }

    fn locate(&self, origin: u64) -> String {
        format!("{} line {origin}", self.label)
    }

    fn progress(&self) -> Option<f64> {
        self.lines.progress()
    }
}

struct JsonSource<R> {
    lines: LineReader<R>,
    label: String,
    slots: Vec<Slot>,
}

impl<R: Read> Source for JsonSource<R> {
    fn fill(&mut self, batch: &mut Batch, max: usize) -> Result<usize, CliError> {
        batch.clear();
        while batch.rows() < max {
            if !self.lines.next(&self.label)? {
                break;
            }
            let line = self.lines.line;
            let text = self.lines.buf.trim();
            if text.is_empty() {
                continue;
            }
            let at = |e: String| CliError::failed(format!("{} line {line}: {e}", self.label));
            let members = match json::parse(text).map_err(at)? {
                Json::Obj(m) => m,
                other => {
                    return Err(at(format!(
                        "expected one JSON object per line ({{\"feature\": value, ...}}), got {}",
                        other.kind()
                    )))
                }
            };
            for (slot, col) in self.slots.iter().zip(&mut batch.cols) {
                let v = members
                    .iter()
                    .find(|(k, _)| *k == *slot.name)
                    .map(|(_, v)| v);
                let r = match v {
                    None => Err("missing (every model input needs a key)".to_string()),
                    Some(v) => push_json(slot, v, col),
                };
                r.map_err(|e| at(format!("input '{}': {e}", slot.name)))?;
            }
            batch.origin.push(line);
        }
        Ok(batch.rows())
    }

    fn locate(&self, origin: u64) -> String {
        format!("{} line {origin}", self.label)
    }

    fn progress(&self) -> Option<f64> {
        self.lines.progress()
    }
}

fn push_json(slot: &Slot, v: &Json, col: &mut Column) -> Result<(), String> {
    match v {
        Json::Num(t) => slot.push([t.as_str()], col),
        Json::Str(s) => slot.push(split_cell(s), col),
        Json::Null if slot.kind == InputKind::Sequence => slot.push([], col),
        Json::Arr(items) => {
            let mut texts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Json::Num(t) => texts.push(t.as_str()),
                    other => {
                        return Err(format!(
                            "array items must be numbers, found {}",
                            other.kind()
                        ))
                    }
                }
            }
            slot.push(texts, col)
        }
        other => Err(format!(
            "expected a number or an array of numbers, got {}",
            other.kind()
        )),
    }
}

/// Whole `.npy` columns, served a batch at a time.
struct NpySource {
    cols: Vec<Column>,
    widths: Vec<usize>,
    rows: usize,
    pos: usize,
    label: String,
}

impl NpySource {
    fn load(files: &[PathBuf], slots: &[Slot], label: &str) -> Result<NpySource, CliError> {
        let mut arrays = Vec::with_capacity(files.len());
        for f in files {
            let arr = ple_testkit::npy::read(f).map_err(CliError::failed)?;
            arrays.push((arr, f.display().to_string()));
        }
        NpySource::from_arrays(arrays, slots, label)
    }

    fn from_arrays(
        arrays: Vec<(NpyArray, String)>,
        slots: &[Slot],
        label: &str,
    ) -> Result<NpySource, CliError> {
        let mut rows = None;
        let mut cols = Vec::with_capacity(slots.len());
        for ((arr, file), slot) in arrays.iter().zip(slots) {
            let fail =
                |msg: String| CliError::failed(format!("{file}: input '{}': {msg}", slot.name));
            let (b, per) = match arr.shape.as_slice() {
                [b] => (*b, 1),
                [b, w] => (*b, *w),
                s => {
                    return Err(fail(format!(
                        "expected a 1-D or 2-D array, got shape {s:?}"
                    )))
                }
            };
            let shape_ok = match slot.kind {
                InputKind::Sequence => per <= slot.n,
                _ => per == slot.n,
            };
            if !shape_ok {
                let want = match slot.kind {
                    InputKind::Dense if slot.n == 1 => "[rows] or [rows, 1]".to_string(),
                    InputKind::Dense => format!("[rows, {}]", slot.n),
                    InputKind::Sparse => "[rows] or [rows, 1]".into(),
                    InputKind::Sequence => format!("[rows, {}] (max_len)", slot.n),
                };
                return Err(fail(format!("shape {:?}, expected {want}", arr.shape)));
            }
            match rows {
                None => rows = Some(b),
                Some(r) if r != b => {
                    return Err(fail(format!("{b} rows, but the other inputs have {r}")));
                }
                _ => {}
            }
            let col = match slot.kind {
                InputKind::Dense => Column::Floats(arr.to_f32()),
                _ => {
                    let ids = match arr.to_i64() {
                        Some(ids) => ids,
                        None => {
                            let mut ids = Vec::with_capacity(b * per);
                            for (i, x) in arr.to_f64().into_iter().enumerate() {
                                if x.fract() != 0.0 || x.abs() >= 9_007_199_254_740_992.0 {
                                    return Err(fail(format!(
                                        "row {}: {x} is not an integer id (store ids as int64)",
                                        i / per.max(1)
                                    )));
                                }
                                ids.push(x as i64);
                            }
                            ids
                        }
                    };
                    if per == slot.n {
                        Column::Ids(ids)
                    } else {
                        // A short sequence array: pad every row.
                        let mut col = Column::Ids(Vec::with_capacity(b * slot.n));
                        for (r, row) in ids.chunks(per.max(1)).enumerate().take(b) {
                            slot.finish_row(row, &mut col)
                                .map_err(|e| fail(format!("row {r}: {e}")))?;
                        }
                        col
                    }
                }
            };
            cols.push(col);
        }
        Ok(NpySource {
            cols,
            widths: slots.iter().map(|s| s.n).collect(),
            rows: rows.unwrap_or(0),
            pos: 0,
            label: label.to_string(),
        })
    }
}

impl Slot {
    /// Appends a row of ids given as integers (the `.npy` path), padding a short sequence.
    fn finish_row(&self, ids: &[i64], col: &mut Column) -> Result<(), String> {
        if let Column::Ids(v) = col {
            v.extend_from_slice(ids);
        }
        self.finish(ids.len(), col)
    }
}

impl Source for NpySource {
    fn fill(&mut self, batch: &mut Batch, max: usize) -> Result<usize, CliError> {
        batch.clear();
        let n = max.min(self.rows - self.pos);
        for ((src, dst), &w) in self.cols.iter().zip(&mut batch.cols).zip(&self.widths) {
            let range = self.pos * w..(self.pos + n) * w;
            match (src, dst) {
                (Column::Ids(s), Column::Ids(d)) => d.extend_from_slice(&s[range]),
                (Column::Floats(s), Column::Floats(d)) => d.extend_from_slice(&s[range]),
                _ => unreachable!("columns are built from the same slots"),
            }
        }
        batch.origin.extend(self.pos as u64..(self.pos + n) as u64);
        self.pos += n;
        Ok(n)
    }

    fn locate(&self, origin: u64) -> String {
        format!("{} row {origin}", self.label)
    }

    fn progress(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.pos as f64 / self.rows as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(kind: InputKind, n: usize, pad: Option<i64>) -> Slot {
        Slot {
            name: "f".into(),
            kind,
            n,
            pad,
        }
    }

    #[test]
    fn cells_and_padding() {
        assert_eq!(
            split_cell(" [1, 2 |3;4  5] ").collect::<Vec<_>>(),
            ["1", "2", "3", "4", "5"]
        );
        let s = slot(InputKind::Sequence, 4, Some(0));
        let mut c = Column::Ids(vec![]);
        s.push(split_cell("7 8"), &mut c).unwrap();
        s.push(split_cell(""), &mut c).unwrap();
        assert!(matches!(&c, Column::Ids(v) if v == &[7, 8, 0, 0, 0, 0, 0, 0]));
        assert!(s.push(split_cell("1 2 3 4 5"), &mut c).is_err());
        let strict = slot(InputKind::Sequence, 2, None);
        let e = strict.push(split_cell("1"), &mut c).unwrap_err();
        assert!(e.contains("--pad-id"), "{e}");
        let d = slot(InputKind::Dense, 2, None);
        let mut f = Column::Floats(vec![]);
        assert!(d.push(split_cell("1.5"), &mut f).is_err());
        assert!(matches!(&f, Column::Floats(v) if v.is_empty()));
        d.push(split_cell("1.5 -2e-3"), &mut f).unwrap();
        assert_eq!(parse_id("12.0").unwrap(), 12);
        assert!(parse_id("1.5").is_err());
        assert_eq!(parse_id("-9223372036854775808").unwrap(), i64::MIN);
    }

    #[test]
    fn csv_quotes_and_columns() {
        let text = "a,\"b\",x[0],x[1],extra\n1,\"7 8\",0.5,1.5,\"q\"\"uoted,\n multi\"\n\n2,\"\",1,2,z\r\n";
        let slots = vec![
            Slot {
                name: "a".into(),
                kind: InputKind::Sparse,
                n: 1,
                pad: None,
            },
            Slot {
                name: "b".into(),
                kind: InputKind::Sequence,
                n: 3,
                pad: Some(0),
            },
            Slot {
                name: "x".into(),
                kind: InputKind::Dense,
                n: 2,
                pad: None,
            },
        ];
        let mut src = CsvSource::new(
            BufReader::new(text.as_bytes()),
            b',',
            None,
            "t.csv".into(),
            &slots,
        )
        .unwrap();
        let mut b = Batch::new(&slots);
        assert_eq!(src.fill(&mut b, 10).unwrap(), 2);
        assert_eq!(b.origin, [2, 5]);
        assert!(matches!(&b.cols[0], Column::Ids(v) if v == &[1, 2]));
        assert!(matches!(&b.cols[1], Column::Ids(v) if v == &[7, 8, 0, 0, 0, 0]));
        assert!(matches!(&b.cols[2], Column::Floats(v) if v == &[0.5, 1.5, 1.0, 2.0]));
    }
}
