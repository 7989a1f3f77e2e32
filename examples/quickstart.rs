//! Loads the bundled model (a small torch-rechub PLE, exported by tools/make_fixtures.py), scores
//! its sample batch, prints per-task scores and the time per batch.
//!
//!     cargo run --release --example quickstart [MODEL.ple [INPUT_DIR]]
//!
//! The `.npy` inputs are read with the test kit's small reader (a dev-dependency of examples).

use std::path::PathBuf;
use std::time::Instant;

use ple::{Input, InputKind, Model, Session};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args().skip(1);
    let model_path = args
        .next()
        .map(PathBuf::from)
        .unwrap_or(root.join("examples/models/quickstart.ple"));
    let input_dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or(root.join("examples/models/quickstart_inputs"));

    let t = Instant::now();
    let model = Model::open(&model_path)?;
    println!(
        "loaded {} ({}, {} bytes) in {:.0} µs; kernels: {}",
        model.name(),
        model_path.display(),
        model.file_size(),
        t.elapsed().as_secs_f64() * 1e6,
        model.simd_level().name()
    );

    // One column per input feature, in the model's order: ids for sparse/sequence, floats for dense.
    let mut ids: Vec<Vec<i64>> = Vec::new();
    let mut floats: Vec<Vec<f32>> = Vec::new();
    let mut batch = 0;
    for f in model.inputs() {
        let arr = ple_testkit::npy::read(input_dir.join(format!("in_{}.npy", f.name)))?;
        batch = arr.shape[0];
        match f.kind {
            InputKind::Dense => floats.push(arr.to_f32()),
            _ => ids.push(arr.to_i64().ok_or("ids must be integers")?),
        }
        println!(
            "  input {:12} {:8} width {}",
            f.name,
            f.kind.name(),
            f.width
        );
    }
    let (mut i, mut d) = (0, 0);
    let inputs: Vec<Input> = model
        .inputs()
        .iter()
        .map(|f| match f.kind {
            InputKind::Dense => {
                d += 1;
                Input::Floats(&floats[d - 1])
            }
            _ => {
                i += 1;
                Input::Ids(&ids[i - 1])
            }
        })
        .collect();

    let mut session = Session::new(&model, batch)?;
    let mut scores = vec![0f32; batch * model.output_width()];
    session.run(&inputs, batch, &mut scores, None)?;

    let names: Vec<&str> = model.outputs().map(|(n, _)| n).collect();
    println!(
        "\nsample  {}",
        names.iter().map(|n| format!("{n:>10}")).collect::<String>()
    );
    for (s, row) in scores.chunks(model.output_width()).enumerate() {
        println!(
            "{s:6}  {}",
            row.iter().map(|x| format!("{x:10.6}")).collect::<String>()
        );
    }

    // The bundled batch comes with torch-rechub's own eval-mode output for it.
    if let Ok(expected) = ple_testkit::npy::read(input_dir.join("expected.npy")) {
        let worst = scores
            .iter()
            .zip(expected.to_f32())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("max |ple − torch-rechub| over the batch: {worst:.1e}");
    }

    // Time repeated calls on the same batch (a rough figure; benches/ has the real benchmark).
    let reps = 2000;
    let t = Instant::now();
    for _ in 0..reps {
        session.run(&inputs, batch, &mut scores, None)?;
    }
    let per_batch = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
    println!(
        "\n{per_batch:.2} µs per batch of {batch} ({:.2} µs per sample)",
        per_batch / batch as f64
    );
    Ok(())
}
