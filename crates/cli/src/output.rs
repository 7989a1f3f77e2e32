//! Score rows for `ple score`: CSV / TSV (the `csv` crate's writer) or JSON lines.

use std::io::{BufWriter, Write};
use std::path::Path;

use ple::Model;

use crate::input::InputFormat;

/// An output format (`--output-format`, else the extension of `--output`, else CSV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Delimited text with a header row; the byte is the delimiter.
    Csv(u8),
    JsonLines,
}

impl OutputFormat {
    /// The text formats take the names (and extensions) they have as inputs.
    pub fn from_name(name: &str) -> Option<OutputFormat> {
        match InputFormat::from_name(name)? {
            InputFormat::Csv(delimiter) => Some(OutputFormat::Csv(delimiter)),
            InputFormat::JsonLines => Some(OutputFormat::JsonLines),
            InputFormat::Npy => None,
        }
    }

    pub fn from_extension(path: &str) -> Option<OutputFormat> {
        Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
            .and_then(OutputFormat::from_name)
    }
}

/// One named block of a score row: an output, or a gate's weights.
struct Block {
    name: String,
    /// `name` as a JSON string literal, escaped once.
    json_key: String,
    width: usize,
}

impl Block {
    fn new(name: &str, width: usize) -> Block {
        Block {
            name: name.to_string(),
            json_key: serde_json::to_string(name).expect("a string serializes"),
            width,
        }
    }
}

enum Sink {
    Csv(Box<csv::Writer<Box<dyn Write>>>),
    JsonLines(BufWriter<Box<dyn Write>>),
}

/// Writes one row of scores (and gate weights) per input row.
pub struct ScoreWriter {
    sink: Sink,
    outputs: Vec<Block>,
    /// Empty unless `--gates`.
    gates: Vec<Block>,
    text: String,
}

impl ScoreWriter {
    pub fn new(out: Box<dyn Write>, format: OutputFormat, model: &Model, gates: bool) -> Self {
        let sink = match format {
            OutputFormat::Csv(delimiter) => Sink::Csv(Box::new(
                csv::WriterBuilder::new()
                    .delimiter(delimiter)
                    .buffer_capacity(1 << 16)
                    .from_writer(out),
            )),
            OutputFormat::JsonLines => Sink::JsonLines(BufWriter::with_capacity(1 << 16, out)),
        };
        let gates = match gates {
            true => model
                .gates()
                .iter()
                .map(|g| Block::new(&g.name, g.width))
                .collect(),
            false => Vec::new(),
        };
        ScoreWriter {
            sink,
            outputs: model.outputs().map(|(n, w)| Block::new(n, w)).collect(),
            gates,
            text: String::new(),
        }
    }

    /// The CSV header: `name` for a width-1 output, `name[i]` for a wider one, then the gate
    /// columns `gate.<gate>[i]` (always indexed: a gate mixes at least one expert). Nothing for
    /// JSON lines.
    pub fn header(&mut self) -> std::io::Result<()> {
        let Sink::Csv(csv) = &mut self.sink else {
            return Ok(());
        };
        let mut names = Vec::new();
        for o in &self.outputs {
            match o.width {
                1 => names.push(o.name.clone()),
                w => names.extend((0..w).map(|i| format!("{}[{i}]", o.name))),
            }
        }
        for g in &self.gates {
            names.extend((0..g.width).map(|i| format!("gate.{}[{i}]", g.name)));
        }
        csv.write_record(&names).map_err(io_error)
    }

    /// One row: `scores` holds the model's output width, `gates` its gate width.
    pub fn row(&mut self, scores: &[f32], gates: Option<&[f32]>) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Csv(csv) => {
                for &x in scores.iter().chain(gates.unwrap_or_default()) {
                    self.text.clear();
                    push_f32(&mut self.text, x);
                    csv.write_field(&self.text).map_err(io_error)?;
                }
                csv.write_record(None::<&[u8]>).map_err(io_error)
            }
            Sink::JsonLines(out) => {
                let line = &mut self.text;
                line.clear();
                line.push('{');
                push_json_members(line, &self.outputs, scores, true);
                if let Some(g) = gates {
                    line.push_str(", \"gates\": {");
                    push_json_members(line, &self.gates, g, false);
                    line.push('}');
                }
                line.push_str("}\n");
                out.write_all(line.as_bytes())
            }
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Csv(csv) => csv.flush(),
            Sink::JsonLines(out) => out.flush(),
        }
    }
}

/// The I/O error inside a csv error, kind kept (a closed pipe must stay `BrokenPipe`).
fn io_error(e: csv::Error) -> std::io::Error {
    if !e.is_io_error() {
        return std::io::Error::other(e);
    }
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        _ => unreachable!("is_io_error"),
    }
}

/// `"name": value, ...` for each block; a width-1 block is a number when `scalar_if_one`.
fn push_json_members(line: &mut String, blocks: &[Block], values: &[f32], scalar_if_one: bool) {
    let mut at = 0;
    for (i, b) in blocks.iter().enumerate() {
        if i > 0 {
            line.push_str(", ");
        }
        line.push_str(&b.json_key);
        line.push_str(": ");
        let xs = &values[at..at + b.width];
        at += b.width;
        if scalar_if_one && b.width == 1 {
            push_json_number(line, xs[0]);
            continue;
        }
        line.push('[');
        for (j, &x) in xs.iter().enumerate() {
            if j > 0 {
                line.push_str(", ");
            }
            push_json_number(line, x);
        }
        line.push(']');
    }
}

/// JSON has no NaN or infinity: those are `null`.
fn push_json_number(line: &mut String, x: f32) {
    if x.is_finite() {
        push_f32(line, x);
    } else {
        line.push_str("null");
    }
}

/// Shortest text that parses back to the same f32 (Rust's float formatting), in exponent form
/// below 1e-5 and from 1e16.
fn push_f32(line: &mut String, x: f32) {
    use std::fmt::Write as _;
    let a = x.abs();
    if a != 0.0 && a.is_finite() && !(1e-5..1e16).contains(&a) {
        let _ = write!(line, "{x:e}");
    } else {
        let _ = write!(line, "{x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip() {
        for x in [
            0.0f32,
            1.0,
            0.1,
            1e-7,
            3.4e38,
            -2.5e-45,
            0.123_456_79,
            12345.678,
        ] {
            let mut s = String::new();
            push_f32(&mut s, x);
            assert_eq!(s.parse::<f32>().unwrap().to_bits(), x.to_bits(), "{s}");
        }
        let mut s = String::new();
        push_f32(&mut s, 1e-7);
        assert_eq!(s, "1e-7");
    }

    #[test]
    fn json_members() {
        let blocks = [Block::new("ctr", 1), Block::new("a\"b", 2)];
        let mut line = String::new();
        push_json_members(&mut line, &blocks, &[0.5, f32::NAN, 2.0], true);
        assert_eq!(line, r#""ctr": 0.5, "a\"b": [null, 2]"#);
    }
}
