//! `ple bench MODEL`: latency percentiles and throughput on random valid inputs.

use std::io::Write as _;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::args::{list_of_positive, Opt};
use super::json::Json;
use super::progress::Progress;
use super::rand::{random_columns, Column, Rng};
use super::{fmt, CliError};
use ple::{Model, Session};

pub const HELP: &str = "\
ple bench — measure scoring latency and throughput

usage: ple bench MODEL [--batch 1,16,256] [--threads N] [--seconds S] [--json]

For every batch size (and thread count), scores random valid inputs (dense values in [-1, 1),
ids uniform over each table, sequences of random length padded with the pad id when the model
has one) for a warm-up and then --seconds, timing every call. Reports the p50, p90, p99 and
max latency of one call and the throughput in samples per second. Inputs rotate through a pool
of up to 4096 distinct samples so embedding lookups are not all cache hits.

With --threads N, N threads each run their own Session over one shared Model at the same time;
latencies are pooled over all threads and samples/s is the aggregate.

options:
  --batch LIST             batch sizes, comma-separated (default 1,16,256)
  --threads LIST           thread counts, comma-separated (default 1)
  --seconds S              measured time per configuration (default 2)
  --warmup S               unmeasured time before it (default: a tenth of --seconds, at most 0.5)
  --json                   print JSON instead of a table (fields: docs/CLI.md)
  --seed N                 random input seed (default 1)
  --simd LEVEL             use this kernel level (scalar, avx2, avx512, neon)
  --no-mmap                read the model into memory instead of mapping it
  -h, --help               this help

A progress display is shown on stderr when it is a terminal.";

const OPTS: &[Opt] = &[
    Opt::value("batch"),
    Opt::value("threads"),
    Opt::value("seconds"),
    Opt::value("warmup"),
    Opt::flag("json"),
    Opt::value("seed"),
    super::MODEL_OPTS[0],
    super::MODEL_OPTS[1],
];

/// Samples of random inputs each thread cycles through (fewer for very wide models).
const POOL_SAMPLES: usize = 4096;
/// Cap on the input values held by all threads together (beyond one batch each).
const POOL_VALUES: usize = 1 << 23;

struct Result1 {
    batch: usize,
    threads: usize,
    calls: usize,
    wall: f64,
    /// Per-call latency in seconds, sorted.
    lat: Vec<f64>,
}

impl Result1 {
    fn pct(&self, q: f64) -> f64 {
        let n = self.lat.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.lat[rank - 1]
    }
    fn samples_per_sec(&self) -> f64 {
        (self.calls * self.batch) as f64 / self.wall
    }
}

pub fn run(args: &[String]) -> Result<(), CliError> {
    let Some(p) = super::parse_or_help("bench", args, OPTS, HELP)? else {
        return Ok(());
    };
    let path = super::one_model("bench", &p)?;
    let batches = list_of_positive("batch", p.value("batch").unwrap_or("1,16,256"))?;
    let threads = list_of_positive("threads", p.value("threads").unwrap_or("1"))?;
    let seconds = p
        .parse::<f64>("seconds", "a number of seconds")?
        .unwrap_or(2.0);
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(CliError::usage(
            "--seconds: must be more than 0 (and at most a day)",
        ));
    }
    let warmup = p
        .parse::<f64>("warmup", "a number of seconds")?
        .unwrap_or((seconds / 10.0).min(0.5));
    if !(0.0..=3600.0).contains(&warmup) {
        return Err(CliError::usage(
            "--warmup: must be between 0 and 3600 seconds",
        ));
    }
    let seed = p
        .parse::<u64>("seed", "a non-negative integer")?
        .unwrap_or(1);
    if let Some(&b) = batches.iter().find(|&&b| b > ple::session::MAX_BATCH_LIMIT) {
        return Err(CliError::usage(format!(
            "--batch: {b} is over the limit of {}",
            ple::session::MAX_BATCH_LIMIT
        )));
    }
    if let Some(&t) = threads.iter().find(|&&t| t > 1024) {
        return Err(CliError::usage(format!(
            "--threads: {t} is over the limit of 1024"
        )));
    }
    let model = super::open_model(&path, &super::load_options(&p)?)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(&t) = threads.iter().find(|&&t| t > cpus) {
        eprintln!("ple: note: {t} threads on {cpus} CPUs: threads will share cores");
    }

    let mut results = Vec::new();
    for &t in &threads {
        for &b in &batches {
            results.push(measure(&model, b, t, seconds, warmup, seed)?);
        }
    }

    let text = if p.flag("json") {
        to_json(&model, &path, seconds, &results).pretty()
    } else {
        to_text(&model, seconds, &results)
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| CliError::write("stdout", e))
}

fn measure(
    model: &Model,
    batch: usize,
    threads: usize,
    seconds: f64,
    warmup: f64,
    seed: u64,
) -> Result<Result1, CliError> {
    let values_per_sample: usize = model
        .inputs()
        .iter()
        .map(|f| f.values_per_sample())
        .sum::<usize>()
        .max(1);
    let pool_samples = (POOL_VALUES / (values_per_sample * threads))
        .clamp(1, POOL_SAMPLES)
        .max(batch);
    let pool_batches = pool_samples.div_ceil(batch);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let measured = Duration::from_secs_f64(seconds);
    let warm = Duration::from_secs_f64(warmup);

    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let barrier = barrier.clone();
            let model = model.clone();
            handles.push(scope.spawn(move || -> Result<(Vec<f64>, Instant), String> {
                // Everything allocated before the barrier: the timed loop only scores.
                let setup = || -> Result<_, String> {
                    let mut rng = Rng::new(seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    let pool: Vec<Vec<Column>> = (0..pool_batches)
                        .map(|_| random_columns(&model, batch, &mut rng))
                        .collect();
                    let session = Session::new(&model, batch).map_err(|e| e.to_string())?;
                    Ok((pool, session))
                };
                let prepared = setup();
                let (pool, mut session) = match prepared {
                    Ok(x) => x,
                    Err(e) => {
                        barrier.wait();
                        barrier.wait();
                        return Err(e);
                    }
                };
                let pool: Vec<Vec<ple::Input>> = pool
                    .iter()
                    .map(|cols| cols.iter().map(Column::as_input).collect())
                    .collect();
                let mut out = vec![0f32; batch * model.output_width()];
                let mut lat = Vec::with_capacity(1 << 16);
                barrier.wait();
                // Warm-up (at least one call), then every thread starts measuring together.
                let start = Instant::now();
                let mut i = 0;
                let mut err = None;
                loop {
                    if let Err(e) = session.run(&pool[i % pool.len()], batch, &mut out, None) {
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
                        .run(&pool[i % pool.len()], batch, &mut out, None)
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
        let label = format!(
            "batch {batch}{}",
            if threads > 1 {
                format!(", {threads} threads")
            } else {
                String::new()
            }
        );
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
        Ok(Result1 {
            batch,
            threads,
            calls: lat.len(),
            wall: (end - begin).as_secs_f64(),
            lat,
        })
    })
}

fn to_text(model: &Model, seconds: f64, results: &[Result1]) -> String {
    let g = model.graph();
    let mut s = format!(
        "model {}: {}, {} weights, {} kernels, {} s per configuration\n",
        model.name(),
        super::inspect::architecture(g),
        model.weight_dtype().map_or("mixed", |d| d.name()),
        model.simd_level().name(),
        seconds
    );
    s += &format!(
        "{:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}\n",
        "batch", "threads", "calls", "p50", "p90", "p99", "max", "samples/s"
    );
    for r in results {
        s += &format!(
            "{:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}\n",
            r.batch,
            r.threads,
            fmt::thousands(r.calls as u64),
            fmt::duration(r.pct(0.50)),
            fmt::duration(r.pct(0.90)),
            fmt::duration(r.pct(0.99)),
            fmt::duration(r.pct(1.0)),
            fmt::rate(r.samples_per_sec())
        );
    }
    s.pop();
    s
}

fn to_json(model: &Model, path: &str, seconds: f64, results: &[Result1]) -> Json {
    let us = |x: f64| Json::float((x * 1e9).round() / 1e3);
    let rows = results
        .iter()
        .map(|r| {
            Json::obj([
                ("batch", Json::int(r.batch as u64)),
                ("threads", Json::int(r.threads as u64)),
                ("calls", Json::int(r.calls as u64)),
                ("seconds", Json::float(r.wall)),
                ("p50_us", us(r.pct(0.50))),
                ("p90_us", us(r.pct(0.90))),
                ("p99_us", us(r.pct(0.99))),
                ("max_us", us(r.pct(1.0))),
                ("samples_per_sec", Json::float(r.samples_per_sec().round())),
            ])
        })
        .collect();
    Json::obj([
        ("path", Json::str(path)),
        ("name", Json::str(model.name())),
        ("simd", Json::str(model.simd_level().name())),
        (
            "weight_dtype",
            Json::str(model.weight_dtype().map_or("mixed", |d| d.name())),
        ),
        ("seconds_per_configuration", Json::float(seconds)),
        ("results", Json::Arr(rows)),
    ])
}
