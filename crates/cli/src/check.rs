//! `ple check MODEL...`: complete validation for pipelines.

use std::io::Write as _;

use super::args::Opt;
use super::rand::{random_columns, Rng};
use super::{fmt, CliError};
use ple::{Model, Session};

pub const HELP: &str = "\
ple check — validate .ple files completely

usage: ple check MODEL... [--quiet]

For each file: the header and metadata checksum, every rule of docs/FORMAT.md (offsets,
shapes, graph consistency), the data checksum (reads every byte; a progress bar is shown on
stderr for large files when it is a terminal), and a smoke test that scores 64 random valid
samples and requires every score to be finite (catches NaN/Inf weights).

Prints one 'ok' line per good file on stdout and one error line per bad file on stderr.
Exit code 0 if every file passed, 1 if any failed, 2 on a usage error.

options:
  -q, --quiet              print nothing on success
  --simd LEVEL             run the smoke test with this kernel level
  --no-mmap                read the file into memory instead of mapping it
  -h, --help               this help";

const OPTS: &[Opt] = &[
    Opt::flag("quiet").short('q'),
    super::MODEL_OPTS[0],
    super::MODEL_OPTS[1],
];

pub fn run(args: &[String]) -> Result<(), CliError> {
    let Some(p) = super::parse_or_help("check", args, OPTS, HELP)? else {
        return Ok(());
    };
    if p.positionals.is_empty() {
        return Err(CliError::usage(
            "missing MODEL (usage: ple check MODEL...; run 'ple check --help')",
        ));
    }
    let opts = super::load_options(&p)?;
    let mut failed = 0;
    for path in &p.positionals {
        match check_one(path, &opts) {
            Ok(summary) => {
                if !p.flag("quiet") {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ok  {path}  ({summary})")
                        .map_err(|e| CliError::write("stdout", e))?;
                }
            }
            Err(e) if p.positionals.len() == 1 => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("ple: error: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(CliError::failed(format!(
            "{failed} of {} files failed the check",
            p.positionals.len()
        )));
    }
    Ok(())
}

fn check_one(path: &str, opts: &ple::LoadOptions) -> Result<String, CliError> {
    let model = super::open_model(path, opts)?;
    super::inspect::verify_with_progress(&model).map_err(|e| super::model_error(path, e))?;
    smoke_test(&model).map_err(|e| CliError::failed(format!("{path}: {e}")))?;
    let (major, minor) = model.format_version();
    Ok(format!(
        ".ple {major}.{minor}, {}, {} weights, checksums ok, graph ok, 64 random samples scored",
        fmt::bytes(model.file_size()),
        model.weight_dtype().map_or("mixed", |d| d.name()),
    ))
}

/// Scores 64 random valid samples (gates included) and requires finite results.
fn smoke_test(model: &Model) -> Result<(), String> {
    const N: usize = 64;
    let mut rng = Rng::new(0x5EED);
    let cols = random_columns(model, N, &mut rng);
    let inputs: Vec<_> = cols.iter().map(|c| c.as_input()).collect();
    let mut session = Session::new(model, N).map_err(|e| e.to_string())?;
    let mut out = vec![0f32; N * model.output_width()];
    let mut gates = vec![0f32; N * model.gate_width()];
    session
        .run(&inputs, N, &mut out, Some(&mut gates))
        .map_err(|e| format!("scoring random inputs failed: {e}"))?;
    let outputs: Vec<(&str, usize)> = model.outputs().collect();
    if let Some(i) = out.iter().position(|x| !x.is_finite()) {
        let col = i % model.output_width();
        let mut start = 0;
        let name = outputs
            .iter()
            .find(|&&(_, w)| {
                start += w;
                col < start
            })
            .map_or("?", |&(n, _)| n);
        return Err(format!(
            "output '{name}' is {} for random valid inputs (sample {}): the weights hold NaN or Inf",
            out[i],
            i / model.output_width()
        ));
    }
    if let Some(i) = gates.iter().position(|x| !x.is_finite()) {
        return Err(format!(
            "a gate weight is {} for random valid inputs (sample {}): the weights hold NaN or Inf",
            gates[i],
            i / model.gate_width()
        ));
    }
    Ok(())
}
