//! `ple score MODEL --input FILE`: score rows from CSV, JSON lines or `.npy`; write CSV or JSON
//! lines.

use std::io::{IsTerminal, Write};

use crate::args::ScoreArgs;
use crate::error::CliError;
use crate::input::{self, Batch, InputSpec, RowSource};
use crate::output::{OutputFormat, ScoreWriter};
use crate::progress::Progress;
use ple::{Error, InputKind, Model, Pool, Session};

pub fn run(args: &ScoreArgs) -> Result<(), CliError> {
    let output = args.output.as_deref().filter(|&o| o != "-");
    let out_format = args
        .output_format
        .or_else(|| output.and_then(OutputFormat::from_extension))
        .unwrap_or(OutputFormat::Csv(b','));

    let model = crate::open_model(&args.model, &crate::load_options(&args.load)?)?;
    if args.gates && model.gate_width() == 0 {
        return Err(CliError::usage(format!(
            "--gates: model '{}' has no gates (it has no expert levels)",
            model.name()
        )));
    }
    if let Some(o) = output {
        let same_file = |input: &str| {
            let file = input.split_once('=').map_or(input, |(_, f)| f);
            matches!((std::fs::canonicalize(file), std::fs::canonicalize(o)), (Ok(a), Ok(b)) if a == b)
        };
        if args.inputs.iter().any(|i| same_file(i)) {
            return Err(CliError::usage(format!(
                "--output {o} is also an input; write elsewhere"
            )));
        }
    }
    let specs = InputSpec::for_model(&model, &args.pad_ids)?;
    let mut source = input::open(&args.inputs, args.input_format, &specs)?;

    // Output: stdout, or a file that is removed again if scoring fails.
    let mut created = None;
    let sink: Box<dyn Write> = match output {
        None => Box::new(std::io::stdout().lock()),
        Some(o) => {
            let special = std::fs::metadata(o).is_ok_and(|m| !m.is_file()); // e.g. /dev/null
            let f = std::fs::File::create(o)
                .map_err(|e| CliError::failed(format!("cannot create {o}: {e}")))?;
            if !special {
                created = Some(o);
            }
            Box::new(f)
        }
    };
    let show_progress = output.is_some() || !std::io::stdout().is_terminal();
    let mut writer = ScoreWriter::new(sink, out_format, &model, args.gates);
    let result = score_all(
        &model,
        source.as_mut(),
        &specs,
        &mut writer,
        args,
        show_progress,
    )
    .and_then(|()| writer.flush().map_err(Stop::Write))
    .map_err(|stop| match stop {
        Stop::Failed(e) => e,
        Stop::Write(e) => CliError::write(output.unwrap_or("stdout"), e),
    });
    if result.is_err() {
        if let Some(o) = created {
            drop(writer);
            let _ = std::fs::remove_file(o);
        }
    }
    result
}

/// Why scoring stopped: bad input or model, or the output could not be written.
enum Stop {
    Failed(CliError),
    Write(std::io::Error),
}

impl From<CliError> for Stop {
    fn from(e: CliError) -> Self {
        Stop::Failed(e)
    }
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Stop::Write(e)
    }
}

fn score_all(
    model: &Model,
    source: &mut dyn RowSource,
    specs: &[InputSpec],
    writer: &mut ScoreWriter,
    args: &ScoreArgs,
    show_progress: bool,
) -> Result<(), Stop> {
    let max_batch = args.batch;
    let mut session = if args.threads > 1 {
        let pool = Pool::new(args.threads).map_err(CliError::from)?;
        Session::with_pool(model, max_batch, &pool)
    } else {
        Session::new(model, max_batch)
    }
    .map_err(CliError::from)?;
    let (ow, gw) = (model.output_width(), model.gate_width());
    let mut scores = vec![0f32; max_batch * ow];
    let mut gates = vec![0f32; if args.gates { max_batch * gw } else { 0 }];
    let mut batch = Batch::new(specs);
    let mut bar = Progress::new("scoring", show_progress);
    let mut done = 0u64;
    // The header goes out with the first scored batch, so input that fails at once writes nothing.
    let mut header_written = false;
    loop {
        let n = source.fill(&mut batch, max_batch)?;
        if n == 0 {
            break;
        }
        let inputs: Vec<_> = batch.columns.iter().map(|c| c.as_input()).collect();
        let batch_gates = args.gates.then(|| &mut gates[..n * gw]);
        session
            .run(&inputs, n, &mut scores[..n * ow], batch_gates)
            .map_err(|e| scoring_error(e, source, &batch, specs))?;
        if !std::mem::replace(&mut header_written, true) {
            writer.header()?;
        }
        for r in 0..n {
            let row_gates = args.gates.then(|| &gates[r * gw..(r + 1) * gw]);
            writer.row(&scores[r * ow..(r + 1) * ow], row_gates)?;
        }
        done += n as u64;
        if let Some(f) = source.progress() {
            bar.update(f, &format!("{} rows", crate::fmt::thousands(done)));
        }
    }
    bar.finish();
    if !header_written {
        writer.header()?;
    }
    Ok(())
}

/// A session error, located at the input row it concerns.
pub(crate) fn scoring_error(
    e: Error,
    source: &dyn RowSource,
    batch: &Batch,
    specs: &[InputSpec],
) -> CliError {
    match e {
        Error::IdOutOfRange {
            feature,
            sample,
            position,
            id,
            vocab,
        } => {
            let is_sequence = specs
                .iter()
                .any(|s| s.name == feature && s.kind == InputKind::Sequence);
            let at = if is_sequence {
                format!(" (position {position})")
            } else {
                String::new()
            };
            CliError::failed(format!(
                "{}: input '{feature}'{at}: id {id} is out of range (the embedding table has {vocab} rows: 0..={})",
                source.locate(batch.origins[sample]),
                vocab.saturating_sub(1)
            ))
        }
        e => CliError::failed(e.to_string()),
    }
}
