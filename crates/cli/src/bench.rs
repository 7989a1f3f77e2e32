//! `ple bench MODEL`: latency percentiles and throughput on random valid inputs.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::args::BenchArgs;
use crate::column::InputColumn;
use crate::error::CliError;
use crate::fmt;
use crate::progress::Progress;
use crate::rand::{random_columns, Rng};
use ple::{Model, Pool, Session};

/// Samples of random inputs each session cycles through (fewer for very wide models).
const INPUT_SAMPLES: usize = 4096;
/// Cap on the input values held by all sessions together (beyond one batch each).
const INPUT_VALUES: usize = 1 << 23;

/// The timings of one (batch size, sessions, threads per call) configuration.
struct Measurement {
    batch: usize,
    sessions: usize,
    threads: usize,
    calls: usize,
    /// Seconds from the common start to the last thread's last call.
    wall: f64,
    /// Per-call latency in seconds, sorted.
    latencies: Vec<f64>,
}

impl Measurement {
    /// Nearest-rank percentile (`q` in 0..=1).
    fn percentile(&self, q: f64) -> f64 {
        let n = self.latencies.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies[rank - 1]
    }

    fn samples_per_sec(&self) -> f64 {
        (self.calls * self.batch) as f64 / self.wall
    }
}

pub fn run(args: &BenchArgs) -> Result<(), CliError> {
    let path = &args.model;
    let model = crate::open_model(path, &crate::load_options(&args.load)?)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let most = |c: &[usize]| c.iter().copied().max().unwrap_or(1);
    let busiest = most(&args.sessions.0) * most(&args.threads.0);
    if busiest > cpus {
        eprintln!("ple: note: up to {busiest} threads on {cpus} CPUs: threads will share cores");
    }

    let mut results = Vec::new();
    for &sessions in &args.sessions.0 {
        for &threads in &args.threads.0 {
            for &batch in &args.batches.0 {
                results.push(measure(&model, batch, sessions, threads, args)?);
            }
        }
    }

    let text = if args.json {
        let report = BenchReport::new(&model, path, args.seconds, &results);
        serde_json::to_string_pretty(&report).expect("the report serializes")
    } else {
        to_text(&model, args.seconds, &results)
    };
    crate::print_stdout(&text)
}

/// Times `sessions` sessions, each on its own thread and splitting its calls across `threads`
/// threads, scoring batches of `batch` random samples, as `args` says.
fn measure(
    model: &Model,
    batch: usize,
    sessions: usize,
    threads: usize,
    args: &BenchArgs,
) -> Result<Measurement, CliError> {
    let seed = args.seed;
    let values_per_sample: usize = model
        .inputs()
        .iter()
        .map(|f| f.values_per_sample())
        .sum::<usize>()
        .max(1);
    let input_samples = (INPUT_VALUES / (values_per_sample * sessions))
        .clamp(1, INPUT_SAMPLES)
        .max(batch);
    let input_batches = input_samples.div_ceil(batch);
    let barrier = Arc::new(Barrier::new(sessions + 1));
    let measured = Duration::from_secs_f64(args.seconds);
    // Default: a tenth of the measured time, at most 0.5 s.
    let warm = Duration::from_secs_f64(args.warmup.unwrap_or((args.seconds / 10.0).min(0.5)));

    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(sessions);
        for t in 0..sessions {
            let barrier = barrier.clone();
            let model = model.clone();
            handles.push(scope.spawn(move || -> Result<(Vec<f64>, Instant), String> {
                // Everything allocated before the barrier: the timed loop only scores.
                let setup = || -> Result<_, String> {
                    let mut rng = Rng::new(seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    let inputs: Vec<Vec<InputColumn>> = (0..input_batches)
                        .map(|_| random_columns(&model, batch, &mut rng))
                        .collect();
                    let session = if threads > 1 {
                        let pool = Pool::new(threads).map_err(|e| e.to_string())?;
                        Session::with_pool(&model, batch, &pool)
                    } else {
                        Session::new(&model, batch)
                    }
                    .map_err(|e| e.to_string())?;
                    Ok((inputs, session))
                };
                let prepared = setup();
                let (inputs, mut session) = match prepared {
                    Ok(x) => x,
                    Err(e) => {
                        barrier.wait();
                        barrier.wait();
                        return Err(e);
                    }
                };
                let inputs: Vec<Vec<ple::Input>> = inputs
                    .iter()
                    .map(|cols| cols.iter().map(InputColumn::as_input).collect())
                    .collect();
                let mut out = vec![0f32; batch * model.output_width()];
                let mut lat = Vec::with_capacity(1 << 16);
                barrier.wait();
                // Warm-up (at least one call), then every thread starts measuring together.
                let start = Instant::now();
                let mut i = 0;
                let mut err = None;
                loop {
                    if let Err(e) = session.run(&inputs[i % inputs.len()], batch, &mut out, None) {
                        err = Some(e.to_string());
                        break;
                    }
                    i += 1;
                    if start.elapsed() >= warm {
                        break;
                    }
                }
                barrier.wait();
                if let Some(e) = err {
                    return Err(e);
                }
                let begin = Instant::now();
                let deadline = begin + measured;
                loop {
                    let t0 = Instant::now();
                    session
                        .run(&inputs[i % inputs.len()], batch, &mut out, None)
                        .map_err(|e| e.to_string())?;
                    let t1 = Instant::now();
                    lat.push((t1 - t0).as_secs_f64());
                    i += 1;
                    if t1 >= deadline {
                        return Ok((lat, t1));
                    }
                }
            }));
        }

        // Setup done → warm-up; then the measured window, with a progress display.
        barrier.wait();
        let mut label = format!("batch {batch}");
        if sessions > 1 {
            label += &format!(", {sessions} sessions");
        }
        if threads > 1 {
            label += &format!(", {threads} threads");
        }
        let mut bar = Progress::new(label, true);
        let total = warm + measured;
        let t0 = Instant::now();
        barrier.wait();
        let begin = Instant::now();
        while handles.iter().any(|h| !h.is_finished()) {
            let f = t0.elapsed().as_secs_f64() / total.as_secs_f64();
            bar.update(f.min(1.0), "");
            std::thread::sleep(Duration::from_millis(50));
        }
        bar.finish();

        let mut lat = Vec::new();
        let mut end = begin;
        for h in handles {
            let (l, e) = h
                .join()
                .map_err(|_| CliError::failed("a benchmark thread panicked"))?
                .map_err(|e| CliError::failed(format!("scoring random inputs failed: {e}")))?;
            lat.extend(l);
            end = end.max(e);
        }
        lat.sort_by(f64::total_cmp);
        Ok(Measurement {
            batch,
            sessions,
            threads,
            calls: lat.len(),
            wall: (end - begin).as_secs_f64(),
            latencies: lat,
        })
    })
}

fn to_text(model: &Model, seconds: f64, results: &[Measurement]) -> String {
    let g = model.graph();
    let mut s = format!(
        "model {}: {}, {} weights, {} kernels, {} s per configuration\n",
        model.name(),
        crate::inspect::architecture(g),
        model.weight_dtype().map_or("mixed", |d| d.name()),
        model.simd_level().name(),
        seconds
    );
    s += &format!(
        "{:>6} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}\n",
        "batch", "sessions", "threads", "calls", "p50", "p90", "p99", "max", "samples/s"
    );
    for r in results {
        s += &format!(
            "{:>6} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}\n",
            r.batch,
            r.sessions,
            r.threads,
            fmt::thousands(r.calls as u64),
            fmt::duration(r.percentile(0.50)),
            fmt::duration(r.percentile(0.90)),
            fmt::duration(r.percentile(0.99)),
            fmt::duration(r.percentile(1.0)),
            fmt::rate(r.samples_per_sec())
        );
    }
    s.pop();
    s
}

/// `--json`: the fields docs/CLI.md lists.
#[derive(Serialize)]
struct BenchReport<'a> {
    path: &'a str,
    name: &'a str,
    simd: &'static str,
    weight_dtype: &'static str,
    seconds_per_configuration: f64,
    results: Vec<MeasurementReport>,
}

#[derive(Serialize)]
struct MeasurementReport {
    batch: usize,
    sessions: usize,
    threads: usize,
    calls: usize,
    seconds: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
    samples_per_sec: u64,
}

impl<'a> BenchReport<'a> {
    fn new(model: &'a Model, path: &'a str, seconds: f64, results: &[Measurement]) -> Self {
        // Microseconds to the nanosecond.
        let us = |secs: f64| (secs * 1e9).round() / 1e3;
        let results = results
            .iter()
            .map(|r| MeasurementReport {
                batch: r.batch,
                sessions: r.sessions,
                threads: r.threads,
                calls: r.calls,
                seconds: r.wall,
                p50_us: us(r.percentile(0.50)),
                p90_us: us(r.percentile(0.90)),
                p99_us: us(r.percentile(0.99)),
                max_us: us(r.percentile(1.0)),
                samples_per_sec: r.samples_per_sec().round() as u64,
            })
            .collect();
        BenchReport {
            path,
            name: model.name(),
            simd: model.simd_level().name(),
            weight_dtype: model.weight_dtype().map_or("mixed", |d| d.name()),
            seconds_per_configuration: seconds,
            results,
        }
    }
}
