//! `ple check MODEL...`: complete validation for pipelines.

use crate::args::CheckArgs;
use crate::error::CliError;
use crate::rand::{random_columns, Rng};
use ple::{Model, Session};

pub fn run(args: &CheckArgs) -> Result<(), CliError> {
    let opts = crate::load_options(&args.load)?;
    let mut failed = 0;
    for path in &args.models {
        match check_one(path, &opts) {
            Ok(summary) => {
                if !args.quiet {
                    crate::print_stdout(&format!("ok  {path}  ({summary})"))?;
                }
            }
            Err(e) if args.models.len() == 1 => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("ple: error: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(CliError::failed(format!(
            "{failed} of {} files failed the check",
            args.models.len()
        )));
    }
    Ok(())
}

fn check_one(path: &str, opts: &ple::LoadOptions) -> Result<String, CliError> {
    let model = crate::open_model(path, opts)?;
    crate::inspect::verify_with_progress(&model).map_err(|e| crate::model_error(path, e))?;
    smoke_test(&model).map_err(|e| CliError::failed(format!("{path}: {e}")))?;
    let (major, minor) = model.format_version();
    Ok(format!(
        ".ple {major}.{minor}, {}, {} weights, checksums ok, graph ok, 64 random samples scored",
        crate::fmt::bytes(model.file_size()),
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
