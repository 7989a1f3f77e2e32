//! The `ple` command-line tool (src/main.rs is its entry point; docs/CLI.md its manual).
//!
//! Commands: `inspect`, `check`, `score`, `bench`. Every error is one line on stderr starting with
//! `ple: error:`; exit codes are 0 (success), 1 (the work failed: unreadable, invalid or corrupt
//! model, bad input data, I/O error) and 2 (the command line itself is wrong).
//!
//! No dependencies beyond the library: the argument parser, the CSV and JSON-lines readers and
//! the JSON writer are small and live here.

mod args;
mod bench;
mod check;
mod fmt;
mod input;
mod inspect;
pub mod json;
mod progress;
mod rand;
mod score;

use std::io::Write;
use std::process::ExitCode;

use args::{Opt, Parsed};
use ple::{LoadOptions, Model, SimdLevel};

/// Why a command stopped.
#[derive(Debug)]
pub enum CliError {
    /// The command line is wrong (exit code 2).
    Usage(String),
    /// The work failed (exit code 1).
    Failed(String),
    /// Output went to a closed pipe (`ple score ... | head`): stop quietly.
    BrokenPipe,
}

impl CliError {
    pub fn usage(msg: impl Into<String>) -> CliError {
        CliError::Usage(msg.into())
    }
    pub fn failed(msg: impl Into<String>) -> CliError {
        CliError::Failed(msg.into())
    }
    /// An I/O error while writing output to `what`.
    pub fn write(what: &str, e: std::io::Error) -> CliError {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Failed(format!("cannot write {what}: {e}"))
        }
    }
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
            CliError::BrokenPipe => 0,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
            CliError::BrokenPipe => f.write_str("broken pipe"),
        }
    }
}

impl From<ple::Error> for CliError {
    fn from(e: ple::Error) -> CliError {
        CliError::Failed(e.to_string())
    }
}

const HELP: &str = "\
ple — inspect, validate, score and benchmark .ple multi-task models

usage: ple <command> [options]

commands:
  inspect MODEL            describe a model: format, inputs, outputs, graph, cost
  check MODEL...           validate completely (checksums included); exit 0 if every file is good
  score MODEL --input F    score rows from CSV, JSON lines or .npy; write CSV or JSON lines
  bench MODEL              latency percentiles and throughput on random valid inputs
  help [COMMAND]           show this help or a command's help

options:
  -h, --help               help (also after any command: 'ple score --help')
  -V, --version            print the version

Exit codes: 0 success, 1 failure (bad model, bad input, I/O), 2 usage error.
Manual: docs/CLI.md";

/// Runs the tool with the process arguments and returns the exit code.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    ExitCode::from(run(&args))
}

/// Runs the tool with `args` (without the program name); returns the exit code. Errors are
/// printed to stderr as one line.
pub fn run(args: &[String]) -> u8 {
    match dispatch(args) {
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

fn dispatch(args: &[String]) -> Result<(), CliError> {
    let Some(cmd) = args.first() else {
        return Err(CliError::usage(
            "no command given (inspect, check, score or bench); run 'ple --help'",
        ));
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "inspect" => inspect::run(rest),
        "check" => check::run(rest),
        "score" => score::run(rest),
        "bench" => bench::run(rest),
        "help" | "-h" | "--help" => match rest.first().map(String::as_str) {
            None => print_help(HELP),
            Some("inspect") => print_help(inspect::HELP),
            Some("check") => print_help(check::HELP),
            Some("score") => print_help(score::HELP),
            Some("bench") => print_help(bench::HELP),
            Some(other) => Err(unknown_command(other)),
        },
        "-V" | "--version" | "version" => {
            let v = format!(
                "ple {} (ple-runtime; .ple format {}.{})",
                env!("CARGO_PKG_VERSION"),
                ple::format::MAJOR,
                ple::format::MINOR
            );
            print_help(&v)
        }
        other => Err(unknown_command(other)),
    }
}

fn unknown_command(cmd: &str) -> CliError {
    CliError::usage(format!(
        "unknown command '{cmd}' (expected inspect, check, score or bench; run 'ple --help')"
    ))
}

/// Prints help text to stdout.
pub(crate) fn print_help(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| CliError::write("stdout", e))
}

/// Options every command that loads a model accepts.
pub(crate) const MODEL_OPTS: [Opt; 2] = [Opt::value("simd"), Opt::flag("no-mmap")];

/// Parses a command's arguments; `Ok(None)` means help was printed.
pub(crate) fn parse_or_help(
    cmd: &str,
    args: &[String],
    opts: &[Opt],
    help: &str,
) -> Result<Option<Parsed>, CliError> {
    let parsed = args::parse(cmd, args, opts)?;
    if parsed.help {
        print_help(help)?;
        return Ok(None);
    }
    Ok(Some(parsed))
}

/// The load options from `--simd` / `--no-mmap`.
pub(crate) fn load_options(p: &Parsed) -> Result<LoadOptions, CliError> {
    let simd = match p.value("simd") {
        None => None,
        Some(name) => {
            let level = SimdLevel::from_name(name).ok_or_else(|| {
                CliError::usage(format!(
                    "--simd: unknown level '{name}' (expected scalar, avx2, avx512 or neon)"
                ))
            })?;
            if level.if_available().is_none() {
                return Err(CliError::failed(format!(
                    "--simd {}: not available on this CPU (available: {})",
                    level.name(),
                    available_levels()
                )));
            }
            Some(level)
        }
    };
    Ok(LoadOptions {
        verify_data: false,
        read_into_memory: p.flag("no-mmap"),
        simd,
    })
}

pub(crate) fn available_levels() -> String {
    SimdLevel::available()
        .iter()
        .map(|l| l.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Opens `path`, prefixing errors that do not already name the file with it.
pub(crate) fn open_model(path: &str, opts: &LoadOptions) -> Result<Model, CliError> {
    Model::open_with(path, opts).map_err(|e| model_error(path, e))
}

pub(crate) fn model_error(path: &str, e: ple::Error) -> CliError {
    match e {
        ple::Error::Io { .. } => CliError::failed(e.to_string()),
        e => CliError::failed(format!("{path}: {e}")),
    }
}

/// Exactly one positional argument, the model path.
pub(crate) fn one_model(cmd: &str, p: &Parsed) -> Result<String, CliError> {
    match p.positionals.as_slice() {
        [m] => Ok(m.clone()),
        [] => Err(CliError::usage(format!(
            "missing MODEL (usage: ple {cmd} MODEL ...; run 'ple {cmd} --help')"
        ))),
        [_, extra, ..] => Err(CliError::usage(format!(
            "unexpected argument '{extra}' (ple {cmd} takes one MODEL; run 'ple {cmd} --help')"
        ))),
    }
}
