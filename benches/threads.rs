//! What a pool buys and costs, for choosing the parallel threshold and the spin window
//! (docs/DESIGN.md, "Threads"). On synthetic models shaped like the benchmark's "criteo" and
//! "large" PLEs and a small one:
//!
//!     cargo bench --bench threads [-- criteo|large|small] [wake] [--threads N]
//!
//! - per batch size, one thread against the pool (every batch split, whatever the session's
//!   threshold), timed in alternating repetitions; the figure is the median of the per-repetition
//!   ratios (one thread ÷ pool: above 1 the pool is faster), with the pool's spin at 0 and at the
//!   default;
//! - `wake`: the round trip of a call of `threads` empty tasks, back to back and after the
//!   workers went to sleep (1 ms apart, spin 0), i.e. what waking a worker costs.
//!
//! For comparisons with other runtimes use benches/compare (docs/PERFORMANCE.md).

use ple_testkit as common;

use std::time::{Duration, Instant};

use common::synth::{self, Shape};
use common::Column;
use ple::{Input, Model, Pool, Session};

fn shape(name: &str) -> Shape {
    match name {
        // Two tasks, two levels, one task and one shared expert per level: the default shape.
        "criteo" => Shape {
            expert_dims: vec![256, 128],
            tower_dims: vec![64],
            dense_width: 26 * 16 + 13,
            sparse: 0,
            sequences: 0,
            ..Shape::default()
        },
        "large" => Shape {
            tasks: 4,
            specific: 2,
            shared: 2,
            expert_dims: vec![512, 256],
            tower_dims: vec![128, 64],
            dense_width: 40 * 16 + 20,
            sparse: 0,
            sequences: 0,
            ..Shape::default()
        },
        _ => Shape {
            expert_dims: vec![64, 32],
            tower_dims: vec![16],
            dense_width: 32,
            ..Shape::default()
        },
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// µs per call of `f`, over `inner` calls.
fn time(inner: usize, f: &mut dyn FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..inner {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / inner as f64
}

/// Calls per repetition so that one lasts about `ms`.
fn calibrate(ms: f64, f: &mut dyn FnMut()) -> usize {
    let t = Instant::now();
    let mut n = 0;
    while n < 3 || t.elapsed().as_secs_f64() < 0.02 {
        f();
        n += 1;
    }
    let per = t.elapsed().as_secs_f64() / n as f64;
    ((ms / 1e3 / per) as usize).max(1)
}

fn scaling(name: &str, threads: usize) {
    let model = Model::from_bytes(&synth::ple(&shape(name), 1).to_bytes()).unwrap();
    let pool = Pool::new(threads).unwrap();
    println!(
        "{name}: {:.1} MFLOP/sample, tile {} rows, {threads} threads; one thread ÷ pool, median of 15 paired reps (1-thread µs)",
        model.flops_per_sample() as f64 / 1e6,
        model.tile_rows()
    );
    for batch in [4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024] {
        let cols = synth::inputs(&model, batch, 3);
        let inputs: Vec<Input> = cols.iter().map(Column::as_input).collect();
        let mut out = vec![0f32; batch * model.output_width()];
        let mut one = Session::new(&model, batch).unwrap();
        let mut pooled = Session::with_pool(&model, batch, &pool).unwrap();
        pooled.set_min_parallel_batch(1);
        let mut line = format!("  b{batch:<5}");
        for spin in [Duration::ZERO, ple::pool::DEFAULT_SPIN] {
            pool.set_spin(spin);
            let mut f1 = || one.run(&inputs, batch, &mut out, None).unwrap();
            let inner = calibrate(10.0, &mut f1);
            let mut ratios = Vec::new();
            let mut singles = Vec::new();
            for _ in 0..15 {
                let a = time(inner, &mut || {
                    one.run(&inputs, batch, &mut out, None).unwrap()
                });
                let b = time(inner, &mut || {
                    pooled.run(&inputs, batch, &mut out, None).unwrap()
                });
                ratios.push(a / b);
                singles.push(a);
            }
            line += &format!(
                "  spin {:>3} µs: {:.2}x ({:.0} µs)",
                spin.as_micros(),
                median(&mut ratios),
                median(&mut singles)
            );
        }
        println!("{line}");
    }
    pool.set_spin(ple::pool::DEFAULT_SPIN);
}

fn wake(threads: usize) {
    let pool = Pool::new(threads).unwrap();
    let task = |_: usize| {};
    for spin in [Duration::ZERO, ple::pool::DEFAULT_SPIN] {
        pool.set_spin(spin);
        let mut back_to_back = Vec::new();
        for _ in 0..15 {
            back_to_back.push(time(2000, &mut || pool.run(threads, &task)));
        }
        let mut after_sleep = Vec::new();
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(1) + spin);
            let t = Instant::now();
            pool.run(threads, &task);
            after_sleep.push(t.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "wake, {threads} threads, spin {} µs: back to back {:.1} µs per call, after the workers slept {:.1} µs (median; p90 {:.1})",
            spin.as_micros(),
            median(&mut back_to_back),
            median(&mut after_sleep.clone()),
            {
                after_sleep.sort_by(f64::total_cmp);
                after_sleep[after_sleep.len() * 9 / 10]
            }
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let named: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| ["criteo", "large", "small", "wake"].contains(a))
        .collect();
    let wanted = |x: &str| named.is_empty() || named.contains(&x);
    if wanted("wake") {
        wake(threads);
    }
    for name in ["small", "criteo", "large"] {
        if wanted(name) {
            scaling(name, threads);
        }
    }
}
