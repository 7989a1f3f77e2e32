//! Sessions on a pool: every batch scores bit-identically to one thread (every fixture model, f32
//! and f16, synthetic models with 64- and 128-sample tiles, every SIMD level, batch sizes around
//! every tile boundary); several sessions share one pool at once; the pool outlives its handle;
//! failed calls write nothing; a panicking task is caught and the pool stays usable; the caller's
//! executor runs the tiles, and one that breaks its contract is reported.

use ple_testkit as common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::synth::{self, Shape};
use common::{fixture_dirs, name, open_at, Column};
use ple::{DType, Error, Executor, Input, Model, Pool, Session, SimdLevel};

fn inputs(cols: &[Column]) -> Vec<Input<'_>> {
    cols.iter().map(Column::as_input).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Scores `batch` samples with `session`, returning outputs and gate weights.
fn score(session: &mut Session, cols: &[Column], batch: usize) -> (Vec<f32>, Vec<f32>) {
    let m = session.model().clone();
    let mut out = vec![f32::NAN; batch * m.output_width()];
    let mut gates = vec![f32::NAN; batch * m.gate_width()];
    session
        .run(&inputs(cols), batch, &mut out, Some(&mut gates))
        .unwrap();
    (out, gates)
}

/// The first `batch` samples of each column.
fn prefix(model: &Model, cols: &[Column], batch: usize) -> Vec<Column> {
    model
        .inputs()
        .iter()
        .zip(cols)
        .map(|(f, c)| c.rows(f.values_per_sample(), 0, batch))
        .collect()
}

/// A synthetic two-level PLE with `width` dense inputs and a first expert layer `width` wide: 256
/// gives 64-sample tiles, 1200 (16.5 MiB of f32 weights) 128-sample tiles.
fn synthetic(width: usize, dtype: DType) -> Model {
    let shape = Shape {
        expert_dims: vec![width, 16],
        dense_width: width,
        dtype,
        ..Shape::default()
    };
    Model::from_bytes(&synth::ple(&shape, 3).to_bytes()).unwrap()
}

/// Batch sizes around every tile boundary a 2-, 3- or 4-thread split can make.
fn batches(max: usize) -> Vec<usize> {
    let mut b: Vec<usize> = (0..=70).collect();
    b.extend([
        95, 96, 97, 127, 128, 129, 191, 192, 193, 255, 256, 257, 300, 383, 384, 385, 511, 512, 513,
        640, 700, 1000, 1024, 1025,
    ]);
    b.retain(|&x| x <= max);
    b
}

/// Every batch size, pooled (split whenever it has over 16 samples) against one thread, bit for
/// bit.
fn check_bit_identical(model: &Model, what: &str, max_batch: usize, pools: &[Pool]) {
    let cols = synth::inputs(model, max_batch, 17);
    let mut single = Session::new(model, max_batch).unwrap();
    let mut pooled: Vec<Session> = pools
        .iter()
        .map(|p| {
            let mut s = Session::with_pool(model, max_batch, p).unwrap();
            s.set_min_parallel_batch(1);
            s
        })
        .collect();
    for batch in batches(max_batch) {
        let cols = prefix(model, &cols, batch);
        let (out, gates) = score(&mut single, &cols, batch);
        for s in &mut pooled {
            let (o, g) = score(s, &cols, batch);
            assert_eq!(
                bits(&o),
                bits(&out),
                "{what}: batch {batch}, {} threads: outputs differ from one thread",
                s.threads()
            );
            assert_eq!(
                bits(&g),
                bits(&gates),
                "{what}: batch {batch}, {} threads: gates differ",
                s.threads()
            );
        }
    }
}

fn pools() -> Vec<Pool> {
    [2, 3, 4].map(|n| Pool::new(n).unwrap()).to_vec()
}

#[test]
fn fixtures_score_bit_identically_on_a_pool() {
    let pools = pools();
    let dirs = fixture_dirs();
    assert!(!dirs.is_empty(), "no fixtures");
    for dir in &dirs {
        for file in ["model.ple", "model_f16.ple"] {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            for level in SimdLevel::available() {
                let model = open_at(&path, level);
                let what = format!("{} {file} {level:?}", name(dir));
                check_bit_identical(&model, &what, 300, &pools);
            }
        }
    }
}

#[test]
fn synthetic_models_score_bit_identically_on_a_pool() {
    let pools = pools();
    // (The wide models are slow to score: batches up to 400 cover their 128-sample tiles.)
    for (width, dtype, max_batch) in [
        (256, DType::F32, 1025),
        (1200, DType::F32, 400),
        (1200, DType::F16, 400),
    ] {
        let model = synthetic(width, dtype);
        let tile = model.tile_rows();
        assert_eq!(tile, if width == 1200 { 128 } else { 64 });
        check_bit_identical(&model, &format!("{width} {dtype:?}"), max_batch, &pools);
    }
}

/// Scratch is one tile per thread, and no more threads than 16-sample tiles of max_batch.
#[test]
fn a_pooled_session_holds_one_tile_per_thread() {
    let model = synthetic(256, DType::F32);
    let pool = Pool::new(4).unwrap();
    let tile_bytes = 64 * model.scratch_floats_per_sample() * 4;
    for (max_batch, threads) in [(1, 1), (16, 1), (17, 2), (48, 3), (64, 4), (1000, 4)] {
        let s = Session::with_pool(&model, max_batch, &pool).unwrap();
        assert_eq!(s.threads(), threads, "max_batch {max_batch}");
        let rows = max_batch.min(64);
        assert_eq!(
            s.scratch_bytes(),
            threads * rows * tile_bytes / 64,
            "max_batch {max_batch}"
        );
    }
    assert_eq!(
        Session::new(&model, 1000).unwrap().scratch_bytes(),
        tile_bytes
    );
}

/// Counts the calls that reach it, and runs them on the calling thread.
struct Counting(AtomicUsize);

impl Executor for Counting {
    fn threads(&self) -> usize {
        4
    }
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        self.0.fetch_add(1, Ordering::Relaxed);
        (0..n).for_each(task);
    }
}

/// Batches below the threshold stay on the calling thread (the pool is never asked); the
/// threshold is at least two 16-sample tiles, and at least 8 MFLOP of work.
#[test]
fn small_batches_stay_on_the_caller() {
    let counting = Arc::new(Counting(AtomicUsize::new(0)));
    let pool = Pool::from_shared_executor(counting.clone()).unwrap();
    for (width, dtype) in [(256, DType::F32), (1200, DType::F16)] {
        let model = synthetic(width, dtype);
        let mut s = Session::with_pool(&model, 1024, &pool).unwrap();
        let threshold = s.min_parallel_batch();
        let by_work = ple::session::MIN_PARALLEL_FLOPS.div_ceil(model.flops_per_sample()) as usize;
        assert_eq!(threshold, by_work.max(32), "width {width}");
        let cols = synth::inputs(&model, threshold, 1);
        for batch in [1, 16, threshold - 1, threshold] {
            let before = counting.0.load(Ordering::Relaxed);
            score(&mut s, &prefix(&model, &cols, batch), batch);
            let asked = counting.0.load(Ordering::Relaxed) - before;
            assert_eq!(
                asked,
                usize::from(batch >= threshold),
                "width {width}, batch {batch}"
            );
        }
        // Lowered, it splits any batch that gives two workers 16 samples or (nearly) so.
        s.set_min_parallel_batch(1);
        for (batch, asked) in [(16, 0), (17, 1)] {
            let before = counting.0.load(Ordering::Relaxed);
            score(&mut s, &prefix(&model, &cols, batch), batch);
            assert_eq!(counting.0.load(Ordering::Relaxed), before + asked);
        }
    }
}

/// Several sessions use one pool at the same instant (the pool serves one call; the others run on
/// their own threads): every result is still right.
#[test]
fn sessions_share_one_pool_concurrently() {
    let model = synthetic(256, DType::F32);
    let batch = 300;
    let cols = Arc::new(synth::inputs(&model, batch, 5));
    let mut single = Session::new(&model, batch).unwrap();
    let (expected, _) = score(&mut single, &cols, batch);
    let expected = Arc::new(expected);
    let pool = Pool::new(2).unwrap();
    let threads = 4;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (model, pool, cols, expected, start) = (
                model.clone(),
                pool.clone(),
                cols.clone(),
                expected.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                let mut s = Session::with_pool(&model, batch, &pool).unwrap();
                s.set_min_parallel_batch(1);
                let ow = model.output_width();
                let mut rng = synth::Rng(t as u64 + 1);
                start.wait();
                for _ in 0..150 {
                    let len = 1 + rng.below(batch as u64) as usize;
                    let part = prefix(&model, &cols, len);
                    let mut out = vec![0f32; len * ow];
                    s.run(&inputs(&part), len, &mut out, None).unwrap();
                    assert_eq!(bits(&out), bits(&expected[..len * ow]), "thread {t}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Dropping every pool handle leaves the sessions' pool running; it stops with the last session.
#[test]
fn a_pool_lives_as_long_as_its_sessions() {
    let model = synthetic(256, DType::F32);
    let batch = 200;
    let cols = synth::inputs(&model, batch, 9);
    let (expected, _) = score(&mut Session::new(&model, batch).unwrap(), &cols, batch);
    let pool = Pool::new(2).unwrap();
    let mut a = Session::with_pool(&model, batch, &pool).unwrap();
    let mut b = Session::with_pool(&model, batch, &pool).unwrap();
    drop(pool);
    assert_eq!(bits(&score(&mut a, &cols, batch).0), bits(&expected));
    drop(a);
    assert_eq!(bits(&score(&mut b, &cols, batch).0), bits(&expected));
    drop(b);
}

/// Bad calls are refused before any work is dispatched: the outputs keep their old values.
#[test]
fn failed_calls_on_a_pool_write_nothing() {
    let model = synthetic(256, DType::F32);
    let batch = 256;
    let pool = Pool::new(2).unwrap();
    let mut s = Session::with_pool(&model, batch, &pool).unwrap();
    s.set_min_parallel_batch(1);
    let cols = synth::inputs(&model, batch, 4);
    let ow = model.output_width();
    let mut out = vec![-7.0f32; batch * ow];
    let mut gates = vec![-7.0f32; batch * model.gate_width()];

    // An out-of-range id in the very last sample (a tile the caller would not run itself).
    let mut bad = synth::inputs(&model, batch, 4);
    let (fi, f) = model
        .inputs()
        .iter()
        .enumerate()
        .find(|(_, f)| f.kind == ple::InputKind::Sparse)
        .unwrap();
    let Column::Ids(ids) = &mut bad[fi] else {
        panic!("sparse")
    };
    *ids.last_mut().unwrap() = f.vocab() as i64;
    let e = s
        .run(&inputs(&bad), batch, &mut out, Some(&mut gates))
        .unwrap_err();
    assert!(matches!(e, Error::IdOutOfRange { sample: 255, .. }), "{e}");
    // Too large a batch, short outputs, short gates.
    assert!(s.run(&inputs(&cols), batch + 1, &mut out, None).is_err());
    assert!(s
        .run(&inputs(&cols), batch, &mut out[..batch * ow - 1], None)
        .is_err());
    let gw = gates.len() - 1;
    assert!(s
        .run(&inputs(&cols), batch, &mut out, Some(&mut gates[..gw]))
        .is_err());
    assert!(
        out.iter().all(|&v| v == -7.0),
        "a failed call wrote outputs"
    );
    assert!(
        gates.iter().all(|&v| v == -7.0),
        "a failed call wrote gates"
    );
    // And the session still works.
    s.run(&inputs(&cols), batch, &mut out, Some(&mut gates))
        .unwrap();
    assert!(out.iter().all(|v| v.is_finite() && *v != -7.0));
}

/// A task that panics, on a worker or on the caller, does not stop the others or the pool: the
/// panic resumes on the caller once every task has returned, and the pool then runs the next call
/// normally.
#[test]
fn a_panicking_task_is_caught_and_the_pool_stays_usable() {
    // Three threads with and without spinning, and one thread (every task on the caller).
    for (threads, spin) in [
        (3, Duration::ZERO),
        (3, Duration::from_micros(50)),
        (1, Duration::ZERO),
    ] {
        let pool = Pool::new(threads).unwrap();
        pool.set_spin(spin);
        for round in 0..20 {
            let ran = AtomicUsize::new(0);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.run(9, &|i| {
                    ran.fetch_add(1, Ordering::Relaxed);
                    // Slow enough that every thread takes tasks.
                    std::thread::sleep(Duration::from_millis(1));
                    if i == 4 + round % 5 {
                        panic!("task {i} fails");
                    }
                })
            }));
            let payload = result.expect_err("the panic reaches the caller");
            let msg = payload.downcast_ref::<String>().unwrap();
            assert!(msg.starts_with("task ") && msg.ends_with(" fails"), "{msg}");
            assert_eq!(
                ran.load(Ordering::Relaxed),
                9,
                "every task ran despite the panic"
            );
            let sum = AtomicUsize::new(0);
            pool.run(100, &|i| {
                sum.fetch_add(i, Ordering::Relaxed);
            });
            assert_eq!(sum.load(Ordering::Relaxed), 4950);
        }
    }
}

/// `Pool::run` runs every index exactly once, for any n, with or without spinning, and when
/// called from several threads at once (the second call runs on its own thread).
#[test]
fn pool_run_runs_every_task_once() {
    let pool = Pool::new(3).unwrap();
    for spin in [
        Duration::ZERO,
        Duration::from_micros(20),
        Duration::from_millis(2),
    ] {
        pool.set_spin(spin);
        assert_eq!(pool.spin(), spin);
        for n in [0, 1, 2, 3, 4, 7, 64, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n {n}");
        }
    }
    let callers = 4;
    let start = Barrier::new(callers);
    std::thread::scope(|scope| {
        for _ in 0..callers {
            scope.spawn(|| {
                start.wait();
                for n in 0..300 {
                    let sum = AtomicUsize::new(0);
                    pool.run(n, &|i| {
                        sum.fetch_add(i + 1, Ordering::Relaxed);
                    });
                    assert_eq!(sum.load(Ordering::Relaxed), n * (n + 1) / 2);
                }
            });
        }
    });
    assert!(Pool::new(ple::pool::MAX_THREADS + 1).is_err());
    assert_eq!(Pool::new(1).unwrap().threads(), 1);
    assert!(Pool::new(0).unwrap().threads() >= 1);
}

/// An executor of the caller's: one scoped thread per task.
struct ScopedThreads(usize);

impl Executor for ScopedThreads {
    fn threads(&self) -> usize {
        self.0
    }
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        assert!(
            n <= self.0,
            "asked for {n} tasks, more than {} threads",
            self.0
        );
        std::thread::scope(|s| {
            for i in 0..n {
                s.spawn(move || task(i));
            }
        });
    }
}

/// Runs the tasks in reverse order on the calling thread.
struct Inline;

impl Executor for Inline {
    fn threads(&self) -> usize {
        5
    }
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        (0..n).rev().for_each(task);
    }
}

#[test]
fn a_callers_executor_scores_bit_identically() {
    let pools = [
        Pool::from_executor(ScopedThreads(3)).unwrap(),
        Pool::from_executor(Inline).unwrap(),
    ];
    assert!(pools[0].is_executor() && pools[0].threads() == 3);
    for (width, dtype, max_batch) in [(256, DType::F32, 700), (1200, DType::F16, 300)] {
        let model = synthetic(width, dtype);
        check_bit_identical(
            &model,
            &format!("executor {width} {dtype:?}"),
            max_batch,
            &pools,
        );
    }
}

/// Returns without running any task.
struct SkipsTasks;

impl Executor for SkipsTasks {
    fn threads(&self) -> usize {
        2
    }
    fn run(&self, _n: usize, _task: &(dyn Fn(usize) + Sync)) {}
}

/// Runs task 0 twice at once, on two threads.
struct RunsTwice;

impl Executor for RunsTwice {
    fn threads(&self) -> usize {
        2
    }
    fn run(&self, _n: usize, task: &(dyn Fn(usize) + Sync)) {
        let go = Barrier::new(2);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    go.wait();
                    task(0)
                });
            }
        });
    }
}

#[test]
fn a_broken_executor_is_reported() {
    let model = synthetic(256, DType::F32);
    let batch = 256;
    let cols = synth::inputs(&model, batch, 2);
    let mut out = vec![0f32; batch * model.output_width()];
    let skips = Pool::from_executor(SkipsTasks).unwrap();
    let mut s = Session::with_pool(&model, batch, &skips).unwrap();
    s.set_min_parallel_batch(1);
    let e = s.run(&inputs(&cols), batch, &mut out, None).unwrap_err();
    assert!(matches!(e, Error::ExecutorContract(_)), "{e}");
    assert!(e.to_string().contains("returned before"), "{e}");

    // The second of two simultaneous runs of task 0 finds the arena claimed; whether it comes
    // while the first still holds it depends on timing, so try until it does (each try is a
    // fresh call; a call where they did not overlap scores correctly).
    let twice = Pool::from_executor(RunsTwice).unwrap();
    let mut s = Session::with_pool(&model, batch, &twice).unwrap();
    s.set_min_parallel_batch(1);
    let mut reported = false;
    for _ in 0..200 {
        match s.run(&inputs(&cols), batch, &mut out, None) {
            Ok(()) => {}
            Err(Error::ExecutorContract(why)) => {
                assert!(why.contains("twice"), "{why}");
                reported = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(reported, "a doubly run task was never noticed");
    assert!(Pool::from_executor(ScopedThreads(0)).is_err());
}
