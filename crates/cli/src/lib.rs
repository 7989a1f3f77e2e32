//! The `ple` command-line tool (src/main.rs is its entry point; docs/CLI.md its manual).
//!
//! Commands: `inspect`, `check`, `score`, `bench`, `gates`. Every error is one line on stderr starting with
//! `ple: error:`; exit codes are 0 (success), 1 (the work failed: unreadable, invalid or corrupt
//! model, bad input data, I/O error) and 2 (the command line itself is wrong).
//!
//! Layout: `args.rs` declares the command line; one module per command (`inspect.rs`,
//! `check.rs`, `score.rs`, `bench.rs`, `gates.rs`); `input/` holds one reader per input format and the
//! rules they share, `output.rs` the score writer; `error.rs`, `column.rs` (owned input
//! columns), `rand.rs` (seeded random valid inputs), `progress.rs` and `fmt.rs` serve them.

mod args;
mod bench;
mod check;
mod column;
mod error;
mod fmt;
mod gates;
mod input;
mod inspect;
mod output;
mod progress;
mod rand;
mod score;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use args::{Command, ModelOptions};
use error::CliError;
use ple::{LoadOptions, Model, SimdLevel};

/// Runs the tool with the process arguments and returns the exit code.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    ExitCode::from(run(&args))
}

/// Runs the tool with `args` (without the program name); returns the exit code. Errors are
/// printed to stderr as one line.
pub fn run(args: &[OsString]) -> u8 {
    let result = args::parse(args).and_then(|command| match command {
        None => Ok(()), // help or version printed
        Some(Command::Inspect(a)) => inspect::run(&a),
        Some(Command::Check(a)) => check::run(&a),
        Some(Command::Score(a)) => score::run(&a),
        Some(Command::Bench(a)) => bench::run(&a),
        Some(Command::Gates(a)) => gates::run(&a),
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            if !matches!(e, CliError::BrokenPipe) {
                let msg = e.to_string().replace('\n', "; ");
                let _ = writeln!(std::io::stderr(), "ple: error: {msg}");
            }
            e.exit_code()
        }
    }
}

/// The load options from `--simd` / `--no-mmap` / `--warm` / `--lock`; a level the CPU lacks fails (exit 1).
fn load_options(opts: &ModelOptions) -> Result<LoadOptions, CliError> {
    if let Some(level) = opts.simd {
        if level.if_available().is_none() {
            return Err(CliError::failed(format!(
                "--simd {}: not available on this CPU (available: {})",
                level.name(),
                available_levels()
            )));
        }
    }
    Ok(LoadOptions {
        read_into_memory: opts.no_mmap,
        simd: opts.simd,
        warm: opts.warm,
        lock: opts.lock,
        ..LoadOptions::default()
    })
}

fn available_levels() -> String {
    SimdLevel::available()
        .iter()
        .map(|l| l.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Opens `path`, prefixing errors that do not already name the file with it.
fn open_model(path: &str, opts: &LoadOptions) -> Result<Model, CliError> {
    Model::open_with(path, opts).map_err(|e| model_error(path, e))
}

fn model_error(path: &str, e: ple::Error) -> CliError {
    match e {
        ple::Error::Io { .. } => CliError::failed(e.to_string()),
        e => CliError::failed(format!("{path}: {e}")),
    }
}

/// Writes `text` and a newline to stdout.
fn print_stdout(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| CliError::write("stdout", e))
}
