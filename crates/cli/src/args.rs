//! The command line, declared with clap's derive: one struct per command, one field per option.
//! A new option is a field with a doc comment (its help line) and, where its text needs checking,
//! a `value_parser` below; a new command is a variant of [`Command`] and a module beside this one.
//!
//! clap's own error text is several lines (message, tip, usage); [`usage_error`] turns it into
//! the tool's one-line `ple: error:` form and keeps clap's typo suggestion.

use std::ffi::OsString;
use std::io::Write as _;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, Subcommand};
use ple::SimdLevel;

use crate::error::CliError;
use crate::input::InputFormat;
use crate::output::OutputFormat;

const TOP_TEMPLATE: &str = "\
{about}

usage: {usage}

commands:
{subcommands}

options:
{options}{after-help}";

const COMMAND_TEMPLATE: &str = "\
{about}

usage: {usage}

arguments:
{positionals}

options:
{options}{after-help}";

/// `ple <command> ...`
#[derive(Parser, Debug)]
#[command(
    name = "ple",
    version = version(),
    about = "ple — inspect, validate, score and benchmark .ple multi-task models",
    override_usage = "ple <command> [options]",
    help_template = TOP_TEMPLATE,
    after_help = "Every command takes -h / --help.\n\
                  Exit codes: 0 success, 1 failure (bad model, bad input, I/O), 2 usage error.\n\
                  Manual: docs/CLI.md"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

fn version() -> String {
    format!(
        "{} (ple-runtime; .ple format {}.{})",
        env!("CARGO_PKG_VERSION"),
        ple::format::MAJOR,
        ple::format::MINOR
    )
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Describe a model: format, inputs, outputs, graph, cost
    #[command(
        help_template = COMMAND_TEMPLATE,
        override_usage = "ple inspect MODEL [--json] [--no-verify-data] [options]",
        after_help = INSPECT_NOTES
    )]
    Inspect(InspectArgs),
    /// Validate completely (checksums included); exit 0 if every file is good
    #[command(
        help_template = COMMAND_TEMPLATE,
        override_usage = "ple check MODEL... [--quiet] [options]",
        after_help = CHECK_NOTES
    )]
    Check(CheckArgs),
    /// Score rows from CSV, JSON lines or .npy; write CSV or JSON lines
    #[command(
        help_template = COMMAND_TEMPLATE,
        override_usage = "ple score MODEL --input FILE [--output FILE] [--gates] [--threads N] [options]",
        after_help = SCORE_NOTES
    )]
    Score(ScoreArgs),
    /// Latency percentiles and throughput on random valid inputs
    #[command(
        help_template = COMMAND_TEMPLATE,
        override_usage = "ple bench MODEL [--batch 1,16,256] [--threads 1,2] [--sessions N] [--seconds S] [--json] [options]",
        after_help = BENCH_NOTES
    )]
    Bench(BenchArgs),
    /// Gate report: how each gate uses the experts over real inputs
    #[command(
        help_template = COMMAND_TEMPLATE,
        override_usage = "ple gates MODEL --input FILE [--csv FILE] [--svg FILE] [options]",
        after_help = GATES_NOTES
    )]
    Gates(GatesArgs),
}

/// Options of every command that loads a model.
#[derive(Args, Debug)]
pub struct ModelOptions {
    /// Use this kernel level (scalar, avx2, avx512, neon), not the best the CPU has
    #[arg(long, value_name = "LEVEL", value_parser = simd_level)]
    pub simd: Option<SimdLevel>,
    /// Read the model into memory instead of mapping it
    #[arg(long)]
    pub no_mmap: bool,
    /// Bring the whole model into memory before starting (reads the file once), so the first
    /// calls do not wait for page faults
    #[arg(long)]
    pub warm: bool,
    /// Also lock it in RAM (mlock; limited by RLIMIT_MEMLOCK, `ulimit -l`)
    #[arg(long)]
    pub lock: bool,
}

const INSPECT_NOTES: &str = "\
Prints the format version, weight dtype, file size, checksum status, the SIMD level scoring
would use, the inputs (name, kind, width, vocabulary, max_len, pooling, pad id), the outputs,
the graph (bottom, levels with their experts and gates, towers with widths and activations),
the parameter count, FLOPs per sample, session scratch memory per sample, and how much of the
model and of its tables is resident in RAM right after opening (before the data checksum reads
the file).

Exit code 1 if the file cannot be read, is invalid, or its data checksum does not match.";

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The .ple file
    #[arg(value_name = "MODEL")]
    pub model: String,
    /// Print one JSON object instead of text (fields: docs/CLI.md)
    #[arg(long)]
    pub json: bool,
    /// Skip the data checksum (it reads every byte of the file)
    #[arg(long)]
    pub no_verify_data: bool,
    #[command(flatten)]
    pub load: ModelOptions,
}

const CHECK_NOTES: &str = "\
For each file: the header and metadata checksum, every rule of docs/FORMAT.md (offsets,
shapes, graph consistency), the data checksum (reads every byte; a progress bar is shown on
stderr for large files when it is a terminal), and a smoke test that scores 64 random valid
samples and requires every score to be finite (catches NaN/Inf weights).

Prints one 'ok' line per good file on stdout and one error line per bad file on stderr.
Exit code 0 if every file passed, 1 if any failed, 2 on a usage error.";

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The .ple files
    #[arg(value_name = "MODEL", required = true)]
    pub models: Vec<String>,
    /// Print nothing on success
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub load: ModelOptions,
}

const SCORE_NOTES: &str = "\
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
  with the shortest text that reads back as the same f32. --gates adds the gate weights:
  CSV columns gate.level0.task0[0] ..., JSON key \"gates\": {\"level0.task0\": [...], ...}.

Exit code 1 on a bad model or bad input (the message names the file, line and input).";

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// The .ple file
    #[arg(value_name = "MODEL")]
    pub model: String,
    /// Input rows (repeatable as NAME=FILE.npy)
    #[arg(short, long = "input", value_name = "FILE", required = true)]
    pub inputs: Vec<String>,
    /// Write here instead of stdout (removed again if scoring fails)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<String>,
    /// Input format: csv, tsv, jsonl or npy
    #[arg(long, value_name = "FMT", value_parser = input_format)]
    pub input_format: Option<InputFormat>,
    /// Output format: csv, tsv or jsonl
    #[arg(long, value_name = "FMT", value_parser = output_format)]
    pub output_format: Option<OutputFormat>,
    /// Add the gate weights (softmax outputs) to every row
    #[arg(long)]
    pub gates: bool,
    /// Pad short sequences with ID if the model has no pad id (all, or only NAME; repeatable)
    #[arg(long = "pad-id", value_name = "[NAME=]ID", value_parser = pad_id)]
    pub pad_ids: Vec<PadId>,
    /// Rows scored per call (results do not depend on it)
    #[arg(long, value_name = "N", default_value = "256", value_parser = batch_size)]
    pub batch: usize,
    /// Split each call across N threads (a ple pool; results do not depend on it)
    #[arg(long, value_name = "N", default_value = "1", value_parser = thread_count)]
    pub threads: usize,
    #[command(flatten)]
    pub load: ModelOptions,
}

const BENCH_NOTES: &str = "\
For every batch size (and thread count), scores random valid inputs (dense values in [-1, 1),
ids uniform over each table, sequences of random length padded with the pad id when the model
has one) for a warm-up and then --seconds, timing every call. Reports the p50, p90, p99 and
max latency of one call and the throughput in samples per second. Inputs rotate through a pool
of up to 4096 distinct samples so embedding lookups are not all cache hits.

With --threads N, each call is split across a pool of N threads (the calling thread included):
the latency of one large request on N cores. Small batches stay on the calling thread (the
session's threshold), as they would in a server. With --sessions N, N sessions over one shared
Model score at the same time, each from its own thread (and each with its own pool when
--threads is above 1): the throughput of a server running N requests at once. Latencies are
pooled over all sessions and samples/s is the aggregate. A progress display is shown on stderr
when it is a terminal.";

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The .ple file
    #[arg(value_name = "MODEL")]
    pub model: String,
    /// Batch sizes, comma-separated
    #[arg(long = "batch", value_name = "LIST", default_value = "1,16,256", value_parser = batch_sizes)]
    pub batches: Counts,
    /// Threads each call is split across (a pool per session), comma-separated
    #[arg(long, value_name = "LIST", default_value = "1", value_parser = thread_counts)]
    pub threads: Counts,
    /// Sessions scoring at the same time, each on its own thread, comma-separated
    #[arg(long, value_name = "LIST", default_value = "1", value_parser = thread_counts)]
    pub sessions: Counts,
    /// Measured time per configuration
    #[arg(long, value_name = "S", default_value = "2", value_parser = seconds, allow_negative_numbers = true)]
    pub seconds: f64,
    /// Unmeasured time before it [default: a tenth of --seconds, at most 0.5]
    #[arg(long, value_name = "S", value_parser = warmup_seconds, allow_negative_numbers = true)]
    pub warmup: Option<f64>,
    /// Print JSON instead of a table (fields: docs/CLI.md)
    #[arg(long)]
    pub json: bool,
    /// Random input seed
    #[arg(long, value_name = "N", default_value = "1", value_parser = seed)]
    pub seed: u64,
    #[command(flatten)]
    pub load: ModelOptions,
}

const GATES_NOTES: &str = "\
Reads rows as `ple score` does (same formats and padding rules) and reports, per level and gate,
each expert's mean weight and its spread over the rows, and the gate's mean entropy. Experts are
labelled as the model defines them: 'task NAME expert j' (a task's own) and 'shared j'; tasks are
named after the outputs their towers make. Warnings: an expert no gate uses (mean weight below
1% in every gate that can use it), a task whose gate gives its own experts under 5%, a gate
whose entropy is under 5% of a uniform gate's (collapsed onto one expert). Use real traffic:
random ids say little.

--csv writes one row per (level, gate, expert); --svg a heatmap per level (gates x experts).
Exit code 1 on a bad model or bad input, or a model without gates.";

#[derive(Args, Debug)]
pub struct GatesArgs {
    /// The .ple file
    #[arg(value_name = "MODEL")]
    pub model: String,
    /// Input rows (repeatable as NAME=FILE.npy), as for `ple score`
    #[arg(short, long = "input", value_name = "FILE", required = true)]
    pub inputs: Vec<String>,
    /// Input format: csv, tsv, jsonl or npy
    #[arg(long, value_name = "FMT", value_parser = input_format)]
    pub input_format: Option<InputFormat>,
    /// Pad short sequences with ID if the model has no pad id (all, or only NAME; repeatable)
    #[arg(long = "pad-id", value_name = "[NAME=]ID", value_parser = pad_id)]
    pub pad_ids: Vec<PadId>,
    /// Write the table as CSV (level, gate, expert, mean, std, entropies)
    #[arg(long, value_name = "FILE")]
    pub csv: Option<String>,
    /// Write a heatmap per level as SVG
    #[arg(long, value_name = "FILE")]
    pub svg: Option<String>,
    /// Rows scored per call
    #[arg(long, value_name = "N", default_value = "256", value_parser = batch_size)]
    pub batch: usize,
    #[command(flatten)]
    pub load: ModelOptions,
}

/// `--pad-id [NAME=]ID`: the id short sequences are padded with, for one input or all.
#[derive(Debug, Clone)]
pub struct PadId {
    /// The sequence input it applies to; `None`: every sequence input without a pad id.
    pub input: Option<String>,
    pub id: i64,
}

/// A comma-separated list of positive counts (`--batch 1,16,256`), in the order given.
#[derive(Debug, Clone)]
pub struct Counts(pub Vec<usize>);

// ---- value parsers: each error names the fault; clap prefixes the option --------------------

fn simd_level(text: &str) -> Result<SimdLevel, String> {
    SimdLevel::from_name(text.trim())
        .ok_or_else(|| format!("unknown level '{text}' (expected scalar, avx2, avx512 or neon)"))
}

fn input_format(text: &str) -> Result<InputFormat, String> {
    InputFormat::from_name(text)
        .ok_or_else(|| format!("unknown format '{text}' (csv, tsv, jsonl or npy)"))
}

fn output_format(text: &str) -> Result<OutputFormat, String> {
    OutputFormat::from_name(text)
        .ok_or_else(|| format!("unknown format '{text}' (csv, tsv or jsonl)"))
}

fn pad_id(text: &str) -> Result<PadId, String> {
    let (input, id) = match text.split_once('=') {
        Some((name, id)) => (Some(name.trim().to_string()), id),
        None => (None, text),
    };
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not ID or NAME=ID"))?;
    Ok(PadId { input, id })
}

fn count_in(text: &str, max: usize) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(n) if n > max => Err(format!("{n} is over the limit of {max}")),
        _ => Err(format!("'{}' is not a positive integer", text.trim())),
    }
}

fn counts_in(text: &str, max: usize) -> Result<Counts, String> {
    let items = text
        .split(',')
        .map(|item| match item.trim() {
            "" => Err(format!("empty item in '{text}' (expected e.g. 1,16,256)")),
            item => count_in(item, max).map_err(|e| format!("{e} (expected e.g. 1,16,256)")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Counts(items))
}

fn batch_size(text: &str) -> Result<usize, String> {
    count_in(text, ple::session::MAX_BATCH_LIMIT).map_err(|_| {
        format!(
            "must be between 1 and {} (got '{text}')",
            ple::session::MAX_BATCH_LIMIT
        )
    })
}

fn batch_sizes(text: &str) -> Result<Counts, String> {
    counts_in(text, ple::session::MAX_BATCH_LIMIT)
}

/// More threads than this is a typo, not a benchmark.
const MAX_THREADS: usize = 1024;

fn thread_counts(text: &str) -> Result<Counts, String> {
    counts_in(text, MAX_THREADS)
}

fn thread_count(text: &str) -> Result<usize, String> {
    count_in(text, MAX_THREADS)
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(s),
        Ok(_) => Err("must be more than 0 (and at most a day)".into()),
        Err(_) => Err(format!("'{text}' is not a number of seconds")),
    }
}

fn warmup_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if (0.0..=3600.0).contains(&s) => Ok(s),
        Ok(_) => Err("must be between 0 and 3600 seconds".into()),
        Err(_) => Err(format!("'{text}' is not a number of seconds")),
    }
}

fn seed(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a non-negative integer"))
}

// ---- parsing and errors ----------------------------------------------------------------------

/// Parses the arguments after the program name. `Ok(None)`: help or the version was printed.
pub fn parse(args: &[OsString]) -> Result<Option<Command>, CliError> {
    let argv = std::iter::once(OsString::from("ple")).chain(args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(Cli { command: Some(c) }) => Ok(Some(c)),
        Ok(Cli { command: None }) => Err(CliError::usage(format!(
            "no command given ({}); run 'ple --help'",
            command_list()
        ))),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let mut out = std::io::stdout().lock();
            write!(out, "{}", e.render()).map_err(|e| CliError::write("stdout", e))?;
            Ok(None)
        }
        Err(e) => Err(usage_error(&e, command_name(args).as_deref())),
    }
}

/// The commands' names, in the order they are declared.
fn command_names() -> Vec<String> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let names = cli.get_subcommands().map(|c| c.get_name().to_string());
    names.filter(|n| n != "help").collect()
}

/// `inspect, check, score or bench`.
fn command_list() -> String {
    match command_names().split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => command_names().concat(),
    }
}

/// The command the arguments name, for error messages.
fn command_name(args: &[OsString]) -> Option<String> {
    let names = command_names();
    args.iter()
        .filter_map(|a| a.to_str())
        .find(|a| names.iter().any(|n| n == a))
        .map(str::to_string)
}

/// clap's error as one line, keeping its suggestion.
fn usage_error(e: &clap::Error, command: Option<&str>) -> CliError {
    let text = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(v)) => v.join(", "),
        _ => String::new(),
    };
    let help = match command {
        Some(c) => format!("run 'ple {c} --help'"),
        None => "run 'ple --help'".to_string(),
    };
    let arg = text(ContextKind::InvalidArg);
    // "--batch <N>" → "--batch"; "<MODEL>" → "MODEL".
    let arg_name = arg
        .split([' ', '='])
        .next()
        .unwrap_or_default()
        .trim_matches(['<', '>', '.']);
    let place = command.map_or(String::new(), |c| format!(" for 'ple {c}'"));
    let message = match e.kind() {
        ErrorKind::InvalidSubcommand => {
            let name = text(ContextKind::InvalidSubcommand);
            match text(ContextKind::SuggestedSubcommand) {
                s if s.is_empty() => format!(
                    "unknown command '{name}' (expected {}; run 'ple --help')",
                    command_list()
                ),
                s => format!("unknown command '{name}' (did you mean {s}?)"),
            }
        }
        ErrorKind::UnknownArgument if arg.starts_with('-') => {
            match text(ContextKind::SuggestedArg) {
                s if s.is_empty() => format!("unknown option '{arg}'{place}; {help}"),
                s => format!("unknown option '{arg}'{place} (did you mean {s}?)"),
            }
        }
        ErrorKind::UnknownArgument => format!("unexpected argument '{arg}'; {help}"),
        ErrorKind::MissingRequiredArgument => {
            let missing: Vec<String> = match e.get(ContextKind::InvalidArg) {
                Some(ContextValue::Strings(v)) => v.iter().map(|a| plain_arg(a)).collect(),
                _ => vec![plain_arg(&arg)],
            };
            format!("missing {}; {help}", missing.join(" and "))
        }
        ErrorKind::InvalidValue if text(ContextKind::InvalidValue).is_empty() => {
            format!("option {arg_name} needs a value; {help}")
        }
        ErrorKind::ValueValidation => match std::error::Error::source(e) {
            Some(reason) => format!("{arg_name}: {reason}"),
            None => format!(
                "{arg_name}: invalid value '{}'",
                text(ContextKind::InvalidValue)
            ),
        },
        // `--json=1`: our options take one value or none.
        ErrorKind::TooManyValues => format!("option {arg_name} takes no value"),
        ErrorKind::ArgumentConflict if text(ContextKind::PriorArg) == arg => {
            format!("option {arg_name} given more than once")
        }
        _ => clap_first_line(e),
    };
    CliError::Usage(message)
}

/// `<MODEL>` → `MODEL`, `--input <FILE>` → `--input FILE`.
fn plain_arg(arg: &str) -> String {
    arg.replace(['<', '>'], "")
        .trim_end_matches("...")
        .to_string()
}

/// clap's message without its `error:` prefix, usage and help lines.
fn clap_first_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &str) -> Result<Option<Command>, CliError> {
        let args: Vec<OsString> = words.split_whitespace().map(OsString::from).collect();
        parse(&args)
    }

    fn usage_message(words: &str) -> String {
        match parse_words(words) {
            Err(CliError::Usage(m)) => m,
            other => panic!("{words}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn the_declaration_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        assert_eq!(command_list(), "inspect, check, score, bench or gates");
    }

    #[test]
    fn parses_every_form() {
        let Some(Command::Score(s)) =
            parse_words("score m.ple -i a --input=b -ic --batch=4 --pad-id t=0 --pad-id 3 --gates")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(s.model, "m.ple");
        assert_eq!(s.inputs, ["a", "b", "c"]);
        assert_eq!(s.batch, 4);
        assert!(s.gates);
        assert_eq!(s.pad_ids[0].input.as_deref(), Some("t"));
        assert_eq!((s.pad_ids[1].input.as_deref(), s.pad_ids[1].id), (None, 3));
        let Some(Command::Bench(b)) = parse_words("bench m.ple --batch 1,16,256").unwrap() else {
            panic!()
        };
        assert_eq!(b.batches.0, [1, 16, 256]);
        assert_eq!(b.threads.0, [1]);
        assert_eq!(b.sessions.0, [1]);
        assert_eq!(b.seconds, 2.0);
        let Some(Command::Bench(b)) =
            parse_words("bench m.ple --threads 1,2 --sessions 3").unwrap()
        else {
            panic!()
        };
        assert_eq!((b.threads.0, b.sessions.0), (vec![1, 2], vec![3]));
        let Some(Command::Score(s)) = parse_words("score m.ple -i a --threads 4").unwrap() else {
            panic!()
        };
        assert_eq!(s.threads, 4);
    }

    #[test]
    fn errors_are_one_line_with_suggestions() {
        let m = usage_message("inspect m.ple --jsn");
        assert_eq!(
            m,
            "unknown option '--jsn' for 'ple inspect' (did you mean --json?)"
        );
        let m = usage_message("scroe m.ple");
        assert_eq!(m, "unknown command 'scroe' (did you mean score?)");
        assert!(usage_message("score m.ple -i x --batch").contains("--batch needs a value"));
        assert!(usage_message("score m.ple -i x --batch 1 --batch 2").contains("more than once"));
        assert_eq!(
            usage_message("inspect m.ple --json=1"),
            "option --json takes no value"
        );
        assert!(usage_message("score m.ple").starts_with("missing --input FILE"));
        assert!(usage_message("check").starts_with("missing MODEL"));
        for bad in ["1,,2", ",1", "1,", ","] {
            let m = usage_message(&format!("bench m.ple --batch {bad}"));
            assert!(m.contains("--batch: "), "{bad}: {m}");
        }
        assert!(usage_message("bench m.ple --batch 1,,2").contains("empty item in '1,,2'"));
        assert!(usage_message("bench m.ple --threads 2000").contains("over the limit of 1024"));
        assert!(usage_message("bench m.ple --seconds -1").starts_with("--seconds: must be"));
    }
}
