//! Quick native timing of the runtime alone on synthetic models shaped like the benchmark's
//! "criteo" and "large" dense-input PLEs (random weights). For comparisons with other runtimes
//! use benches/compare (docs/PERFORMANCE.md); this one is for kernel work.
//!
//!     cargo bench --bench synthetic [-- criteo|large] [f32|f16] [b1|b16|b256|b1024]
//!
//! Prints the median and (in brackets) the fastest of 15 repetitions: on a shared machine the
//! fastest is the steadier figure for comparing two versions of a kernel.

use ple_testkit as common;

use std::time::Instant;

use common::synth::{self, Shape};
use common::Column;
use ple::{DType, Input, Model, Session};

fn shape(name: &str, dtype: DType) -> Shape {
    match name {
        // Two tasks, two levels, one task and one shared expert per level: the default shape.
        "criteo" => Shape {
            expert_dims: vec![256, 128],
            tower_dims: vec![64],
            dense_width: 26 * 16 + 13,
            sparse: 0,
            sequences: 0,
            dtype,
            ..Shape::default()
        },
        _ => Shape {
            tasks: 4,
            specific: 2,
            shared: 2,
            expert_dims: vec![512, 256],
            tower_dims: vec![128, 64],
            dense_width: 40 * 16 + 20,
            sparse: 0,
            sequences: 0,
            dtype,
            ..Shape::default()
        },
    }
}

fn median_and_min_us(model: &Model, batch: usize) -> (f64, f64) {
    let cols = synth::inputs(model, batch, 3);
    let inputs: Vec<Input> = cols.iter().map(Column::as_input).collect();
    let mut s = Session::new(model, batch).unwrap();
    let mut out = vec![0f32; batch * model.output_width()];
    let target = 0.3f64;
    let t = Instant::now();
    let mut reps = 0;
    while t.elapsed().as_secs_f64() < 0.05 {
        s.run(&inputs, batch, &mut out, None).unwrap();
        reps += 1;
    }
    let per = t.elapsed().as_secs_f64() / reps as f64;
    let inner = ((target / 15.0 / per) as usize).max(1);
    let mut samples: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                s.run(&inputs, batch, &mut out, None).unwrap();
            }
            t.elapsed().as_secs_f64() * 1e6 / inner as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[0])
}

fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |options: &[&str], this: &str| {
        let named: Vec<&String> = only
            .iter()
            .filter(|o| options.contains(&o.as_str()))
            .collect();
        named.is_empty() || named.iter().any(|o| *o == this)
    };
    for name in ["criteo", "large"] {
        if !wanted(&["criteo", "large"], name) {
            continue;
        }
        for dtype in [DType::F32, DType::F16] {
            if !wanted(&["f32", "f16"], dtype.name()) {
                continue;
            }
            let model = Model::from_bytes(&synth::ple(&shape(name, dtype), 1).to_bytes()).unwrap();
            let flops = model.flops_per_sample() as f64;
            let weight_bytes = model.parameter_count() as f64 * dtype.size() as f64;
            print!(
                "{name:7} {:4} ({:.2} MB, {}): ",
                dtype.name(),
                weight_bytes / 1e6,
                model.simd_level().name()
            );
            for batch in [1, 16, 256, 1024] {
                if !wanted(&["b1", "b16", "b256", "b1024"], &format!("b{batch}")) {
                    continue;
                }
                let (us, min) = median_and_min_us(&model, batch);
                print!(
                    " b{batch} {us:.1} [{min:.1}] µs ({:.1} [{:.1}] GFLOP/s)",
                    flops * batch as f64 / us / 1e3,
                    flops * batch as f64 / min / 1e3
                );
            }
            println!();
        }
    }
}
