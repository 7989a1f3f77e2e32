//! `ple score MODEL --input FILE`: score rows from CSV, JSON lines or `.npy`; write CSV or JSON
//! lines.

use std::io::{IsTerminal, Write};
use std::path::Path;

use super::args::Opt;
use super::input::{self, Batch, Format, Slot, Source};
use super::progress::Progress;
use super::CliError;
use ple::{Error, InputKind, Model, Session};

pub const HELP: &str = "\
ple score — score rows with a .ple model

usage: ple score MODEL --input FILE [--output FILE] [--gates] [options]

input (--input, required; '-' is stdin):
  FILE.csv / FILE.tsv      header row naming the model's inputs; one row per sample
  FILE.jsonl               one JSON object per line: {\"feature\": value or [values], ...}
  FILE.npy                 a model with one input: [rows, width] floats or [rows(, len)] ids
  DIR                      in_<feature>.npy for every input (the tests/fixtures layout)
  NAME=FILE.npy            repeat --input once per model input
  The format comes from --input-format, else the extension, else the first bytes.
  Vectors and sequences: one cell 'v1 v2 v3' (separators: space | , ;) or columns
  name[0], name[1], ... Columns that are not model inputs are ignored. Sequences shorter
  than max_len are padded with the model's pad id; a model without one needs --pad-id.

output (stdout unless --output):
  CSV: a header of output names (name[i] for wide outputs) and one row per input row, in
  input order; JSON lines: {\"output\": score, ...}. The format comes from --output-format,
  else the extension of --output (.csv, .tsv, .jsonl), else CSV. Scores are printed
  with the shortest text that reads back as the same f32.

options:
  -i, --input FILE         input rows (repeatable as NAME=FILE.npy)
  -o, --output FILE        write here instead of stdout (removed again if scoring fails)
  --input-format FMT       csv, tsv, jsonl or npy
  --output-format FMT      csv, tsv or jsonl
  --gates                  add the gate weights: CSV columns gate.level0.task0[0] ...,
                           JSON key \"gates\": {\"level0.task0\": [...], ...}
  --pad-id [NAME=]ID       pad short sequences of models without a pad id with ID
                           (all such sequence inputs, or only NAME; repeatable)
  --batch N                rows scored per call (default 256; results do not depend on it)
  --simd LEVEL             use this kernel level (scalar, avx2, avx512, neon)
  --no-mmap                read the model into memory instead of mapping it
  -h, --help               this help

Exit code 1 on a bad model or bad input (the message names the file, line and input).";

const OPTS: &[Opt] = &[
    Opt::repeated("input").short('i'),
    Opt::value("output").short('o'),
    Opt::value("input-format"),
    Opt::value("output-format"),
    Opt::flag("gates"),
    Opt::repeated("pad-id"),
    Opt::value("batch"),
    super::MODEL_OPTS[0],
    super::MODEL_OPTS[1],
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutFormat {
    Csv(u8),
    JsonLines,
}

pub fn run(args: &[String]) -> Result<(), CliError> {
    let Some(p) = super::parse_or_help("score", args, OPTS, HELP)? else {
        return Ok(());
    };
    let path = super::one_model("score", &p)?;
    let inputs = p.values("input");
    if inputs.is_empty() {
        return Err(CliError::usage(
            "missing --input FILE (CSV, JSON lines, .npy or a directory; '-' for stdin); run 'ple score --help'",
        ));
    }
    let in_format = match p.value("input-format") {
        None => None,
        Some(f) => Some(Format::from_name(f).ok_or_else(|| {
            CliError::usage(format!(
                "--input-format: unknown format '{f}' (csv, tsv, jsonl or npy)"
            ))
        })?),
    };
    let output = p.value("output");
    let out_format = match p.value("output-format") {
        Some(f) => out_format_named(f).ok_or_else(|| {
            CliError::usage(format!(
                "--output-format: unknown format '{f}' (csv, tsv or jsonl)"
            ))
        })?,
        None => output
            .and_then(|o| Path::new(o).extension())
            .and_then(|e| e.to_str())
            .and_then(out_format_named)
            .unwrap_or(OutFormat::Csv(b',')),
    };
    let batch = p
        .parse::<usize>("batch", "a positive integer")?
        .unwrap_or(256);
    if batch == 0 || batch > ple::session::MAX_BATCH_LIMIT {
        return Err(CliError::usage(format!(
            "--batch: must be between 1 and {}",
            ple::session::MAX_BATCH_LIMIT
        )));
    }
    let pad_ids = p
        .values("pad-id")
        .into_iter()
        .map(|v| {
            let (name, id) = match v.split_once('=') {
                Some((n, id)) => (Some(n.to_string()), id),
                None => (None, v),
            };
            id.trim()
                .parse::<i64>()
                .map(|id| (name, id))
                .map_err(|_| CliError::usage(format!("--pad-id: '{v}' is not ID or NAME=ID")))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let model = super::open_model(&path, &super::load_options(&p)?)?;
    let gates = p.flag("gates");
    if gates && model.gate_width() == 0 {
        return Err(CliError::usage(format!(
            "--gates: model '{}' has no gates (it has no expert levels)",
            model.name()
        )));
    }
    if let Some(o) = output.filter(|&o| o != "-") {
        let same = |i: &str| {
            let i = i.split_once('=').map_or(i, |(_, f)| f);
            matches!((std::fs::canonicalize(i), std::fs::canonicalize(o)), (Ok(a), Ok(b)) if a == b)
        };
        if inputs.iter().any(|i| same(i)) {
            return Err(CliError::usage(format!(
                "--output {o} is also an input; write elsewhere"
            )));
        }
    }
    let slots = Slot::for_model(&model, &pad_ids)?;
    let mut source = input::open(&inputs, in_format, &slots)?;

    // Output: stdout or a file that is removed again if scoring fails.
    let mut created = None;
    let sink: Box<dyn Write> = match output {
        None | Some("-") => Box::new(std::io::stdout().lock()),
        Some(o) => {
            let existed_special = std::fs::metadata(o).is_ok_and(|m| !m.is_file());
            let f = std::fs::File::create(o)
                .map_err(|e| CliError::failed(format!("cannot create {o}: {e}")))?;
            if !existed_special {
                created = Some(o.to_string());
            }
            Box::new(f)
        }
    };
    let to_terminal = !matches!(output, Some(o) if o != "-") && std::io::stdout().is_terminal();
    let label = output.unwrap_or("stdout").to_string();
    let mut writer = Writer::new(sink, out_format, &model, gates);
    let result = score_all(
        &model,
        source.as_mut(),
        &slots,
        &mut writer,
        batch,
        gates,
        !to_terminal,
    )
    .and_then(|()| writer.flush())
    .map_err(|e| match e {
        WriteOr::Cli(e) => e,
        WriteOr::Io(e) => CliError::write(&label, e),
    });
    if result.is_err() {
        if let Some(o) = created {
            drop(writer);
            let _ = std::fs::remove_file(o);
        }
    }
    result
}

fn out_format_named(name: &str) -> Option<OutFormat> {
    match name.to_ascii_lowercase().as_str() {
        "csv" => Some(OutFormat::Csv(b',')),
        "tsv" => Some(OutFormat::Csv(b'\t')),
        "jsonl" | "ndjson" | "json" => Some(OutFormat::JsonLines),
        _ => None,
    }
}

enum WriteOr {
    Cli(CliError),
    Io(std::io::Error),
}

impl From<CliError> for WriteOr {
    fn from(e: CliError) -> Self {
        WriteOr::Cli(e)
    }
}

impl From<std::io::Error> for WriteOr {
    fn from(e: std::io::Error) -> Self {
        WriteOr::Io(e)
    }
}

fn score_all(
    model: &Model,
    source: &mut dyn Source,
    slots: &[Slot],
    writer: &mut Writer,
    max_batch: usize,
    gates: bool,
    show_progress: bool,
) -> Result<(), WriteOr> {
    let mut session = Session::new(model, max_batch).map_err(CliError::from)?;
    let ow = model.output_width();
    let gw = model.gate_width();
    let mut out = vec![0f32; max_batch * ow];
    let mut gate_buf = vec![0f32; if gates { max_batch * gw } else { 0 }];
    let mut batch = Batch::new(slots);
    let mut bar = Progress::new("scoring", show_progress);
    let mut done = 0u64;
    // The header goes out with the first scored batch, so input that fails at once writes nothing.
    let mut header = false;
    loop {
        let n = source.fill(&mut batch, max_batch)?;
        if n == 0 {
            break;
        }
        let inputs: Vec<_> = batch.cols.iter().map(|c| c.as_input()).collect();
        let g = gates.then(|| &mut gate_buf[..n * gw]);
        session
            .run(&inputs, n, &mut out[..n * ow], g)
            .map_err(|e| scoring_error(e, source, &batch, slots))?;
        if !std::mem::replace(&mut header, true) {
            writer.header()?;
        }
        for r in 0..n {
            let gr = gates.then(|| &gate_buf[r * gw..(r + 1) * gw]);
            writer.row(&out[r * ow..(r + 1) * ow], gr)?;
        }
        done += n as u64;
        if let Some(f) = source.progress() {
            bar.update(f, &format!("{} rows", super::fmt::thousands(done)));
        }
    }
    bar.finish();
    if !header {
        writer.header()?;
    }
    Ok(())
}

/// A session error, located at the input row it concerns.
fn scoring_error(e: Error, source: &dyn Source, batch: &Batch, slots: &[Slot]) -> CliError {
    match e {
        Error::IdOutOfRange {
            feature,
            sample,
            position,
            id,
            vocab,
        } => {
            let seq = slots
                .iter()
                .any(|s| s.name == feature && s.kind == InputKind::Sequence);
            let at = if seq {
                format!(" (position {position})")
            } else {
                String::new()
            };
            CliError::failed(format!(
                "{}: input '{feature}'{at}: id {id} is out of range (the embedding table has {vocab} rows: 0..={})",
                source.locate(batch.origin[sample]),
                vocab.saturating_sub(1)
            ))
        }
        e => CliError::failed(e.to_string()),
    }
}

/// Writes score rows as CSV or JSON lines.
struct Writer {
    out: std::io::BufWriter<Box<dyn Write>>,
    format: OutFormat,
    /// Output (name, width) in column order.
    outputs: Vec<(String, usize)>,
    /// Gate (name, width) in column order.
    gates: Vec<(String, usize)>,
    line: String,
}

impl Writer {
    fn new(sink: Box<dyn Write>, format: OutFormat, model: &Model, gates: bool) -> Writer {
        Writer {
            out: std::io::BufWriter::with_capacity(1 << 16, sink),
            format,
            outputs: model.outputs().map(|(n, w)| (n.to_string(), w)).collect(),
            gates: if gates {
                model
                    .gates()
                    .iter()
                    .map(|g| (g.name.clone(), g.width))
                    .collect()
            } else {
                Vec::new()
            },
            line: String::new(),
        }
    }

    fn header(&mut self) -> std::io::Result<()> {
        let OutFormat::Csv(d) = self.format else {
            return Ok(());
        };
        let mut names = Vec::new();
        for (name, w) in &self.outputs {
            column_names(name, *w, &mut names);
        }
        for (name, w) in &self.gates {
            // Gate columns are always indexed: a gate mixes at least one expert.
            names.extend((0..*w).map(|i| format!("gate.{name}[{i}]")));
        }
        let d = d as char;
        let quoted: Vec<String> = names.iter().map(|n| csv_quote(n, d)).collect();
        writeln!(self.out, "{}", quoted.join(&d.to_string()))
    }

    fn row(&mut self, scores: &[f32], gates: Option<&[f32]>) -> std::io::Result<()> {
        use std::fmt::Write as _;
        let line = &mut self.line;
        line.clear();
        match self.format {
            OutFormat::Csv(d) => {
                for (i, &x) in scores.iter().chain(gates.unwrap_or(&[])).enumerate() {
                    if i > 0 {
                        line.push(d as char);
                    }
                    push_f32(line, x);
                }
            }
            OutFormat::JsonLines => {
                line.push('{');
                let mut at = 0;
                for (i, (name, w)) in self.outputs.iter().enumerate() {
                    if i > 0 {
                        line.push_str(", ");
                    }
                    super::json::write_str(line, name);
                    line.push_str(": ");
                    json_values(line, &scores[at..at + w], *w == 1);
                    at += w;
                }
                if let Some(g) = gates {
                    line.push_str(", \"gates\": {");
                    let mut at = 0;
                    for (i, (name, w)) in self.gates.iter().enumerate() {
                        if i > 0 {
                            line.push_str(", ");
                        }
                        super::json::write_str(line, name);
                        line.push_str(": ");
                        json_values(line, &g[at..at + w], false);
                        at += w;
                    }
                    line.push('}');
                }
                line.push('}');
            }
        }
        let _ = writeln!(line);
        self.out.write_all(line.as_bytes())
    }

    fn flush(&mut self) -> Result<(), WriteOr> {
        self.out.flush().map_err(WriteOr::Io)
    }
}

/// `name` for a scalar output, `name[0]`, `name[1]`, ... for a wide one.
fn column_names(name: &str, width: usize, out: &mut Vec<String>) {
    if width == 1 {
        out.push(name.to_string());
    } else {
        out.extend((0..width).map(|i| format!("{name}[{i}]")));
    }
}

fn csv_quote(s: &str, d: char) -> String {
    if s.contains([d, '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Shortest text that parses back to the same f32; exponent form for very small or large values.
fn push_f32(line: &mut String, x: f32) {
    use std::fmt::Write as _;
    let a = x.abs();
    if a != 0.0 && a.is_finite() && !(1e-5..1e16).contains(&a) {
        let _ = write!(line, "{x:e}");
    } else {
        let _ = write!(line, "{x}");
    }
}

/// JSON number(s): `0.5` or `[0.5, 0.25]`; non-finite values are `null`.
fn json_values(line: &mut String, xs: &[f32], scalar: bool) {
    let one = |line: &mut String, x: f32| {
        if x.is_finite() {
            push_f32(line, x);
        } else {
            line.push_str("null");
        }
    };
    if scalar {
        one(line, xs[0]);
    } else {
        line.push('[');
        for (i, &x) in xs.iter().enumerate() {
            if i > 0 {
                line.push_str(", ");
            }
            one(line, x);
        }
        line.push(']');
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
}
