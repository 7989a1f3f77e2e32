//! No heap allocation after `Session::new` / `Session::with_pool`: a counting global allocator
//! watches thousands of scoring calls (every fixture model kind, f32 and f16, every SIMD level,
//! varying batch sizes, on one thread and split across pools of 2 and 3 threads, and two sessions
//! sharing a pool at once) and the error paths (batch > max_batch, wrong lengths, out-of-range
//! ids).
//!
//! The count covers every thread of the process (the pools' workers included), so this test runs
//! without libtest's harness (`harness = false` in Cargo.toml): no other test, and no harness
//! thread, can allocate while it counts.

use ple_testkit as common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;

use common::synth::{self, Shape};
use common::*;
use ple::{Input, Model, Pool, Session, SimdLevel};

struct Counting;

/// Whether allocations are being counted, and how many there were.
static COUNTING: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocations made by any thread while `f` runs.
fn count_allocations(f: impl FnOnce()) -> u64 {
    let before = COUNT.load(Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    COUNT.load(Ordering::SeqCst) - before
}

fn main() {
    let pools = [Pool::new(2).unwrap(), Pool::new(3).unwrap()];
    scoring_allocates_nothing(None);
    for pool in &pools {
        scoring_allocates_nothing(Some(pool));
    }
    large_batches_on_a_shared_pool_allocate_nothing(&pools[0]);
    int8_scoring_allocates_nothing(&pools[0]);
    ragged_scoring_allocates_nothing(&pools[0]);
    eprintln!("no_alloc: ok");
}

/// A synthetic PLE with int8 dense layers (activation quantization into the session's scratch),
/// every SIMD level, batches 0..=300 on one thread and split across a pool.
fn int8_scoring_allocates_nothing(pool: &Pool) {
    let shape = Shape {
        expert_dims: vec![64, 32],
        tower_dims: vec![32],
        dense_width: 40,
        dtype: ple::DType::I8,
        ..Shape::default()
    };
    let bytes = synth::ple(&shape, 3).to_bytes();
    let batch = 300;
    for level in SimdLevel::available() {
        let opts = ple::LoadOptions {
            simd: Some(level),
            ..Default::default()
        };
        let model = Model::from_bytes_with(&bytes, &opts).unwrap();
        let cols = synth::inputs(&model, batch, 1);
        let inputs: Vec<Input> = cols.iter().map(Column::as_input).collect();
        let mut out = vec![0f32; batch * model.output_width()];
        let mut single = Session::new(&model, batch).unwrap();
        let mut pooled = Session::with_pool(&model, batch, pool).unwrap();
        pooled.set_min_parallel_batch(1);
        let during = count_allocations(|| {
            for session in [&mut single, &mut pooled] {
                for b in [batch, 1, 77, 64, 129] {
                    let mut prefix = [Input::Floats(&[]); 16];
                    for (p, i) in prefix.iter_mut().zip(&inputs) {
                        *p = match *i {
                            Input::Ids(v) => Input::Ids(&v[..v.len() / batch * b]),
                            Input::Floats(v) => Input::Floats(&v[..v.len() / batch * b]),
                            Input::RaggedIds { .. } | Input::RaggedFloats { .. } => {
                                unreachable!("padded columns")
                            }
                        };
                    }
                    let ow = model.output_width();
                    session
                        .run(&prefix[..inputs.len()], b, &mut out[..b * ow], None)
                        .unwrap();
                }
            }
        });
        assert_eq!(
            during, 0,
            "int8 {level:?}: {during} allocations while scoring"
        );
    }
    eprintln!(
        "int8 model, every level, 1 and {} threads: 0 allocations",
        pool.threads()
    );
}

/// Ragged sequence columns (sum, mean and max pooling, f32 and f16 tables, every SIMD level), on
/// one thread and split across a pool, and every malformed-column error.
fn ragged_scoring_allocates_nothing(pool: &Pool) {
    let batch = 300;
    let mut calls = 0;
    for dtype in [ple::DType::F32, ple::DType::F16] {
        let shape = Shape {
            sequences: 3,
            max_len: 9,
            dtype,
            ..Shape::default()
        };
        let bytes = synth::ple(&shape, 5).to_bytes();
        for level in SimdLevel::available() {
            let opts = ple::LoadOptions {
                simd: Some(level),
                ..Default::default()
            };
            let model = Model::from_bytes_with(&bytes, &opts).unwrap();
            let cols = synth::inputs(&model, batch, 2);
            // Sample s of each sequence keeps its first s % (max_len + 1) ids.
            let ragged: Vec<Option<(Vec<i64>, Vec<i64>)>> = model
                .inputs()
                .iter()
                .zip(&cols)
                .map(|(f, c)| match (f.kind, c) {
                    (ple::InputKind::Sequence, Column::Ids(v)) => {
                        let (mut ids, mut offsets) = (Vec::new(), vec![0i64]);
                        for (s, row) in v.chunks(f.max_len).enumerate() {
                            ids.extend_from_slice(&row[..s % (f.max_len + 1)]);
                            offsets.push(ids.len() as i64);
                        }
                        Some((ids, offsets))
                    }
                    _ => None,
                })
                .collect();
            let q = ragged.iter().position(Option::is_some).unwrap();
            let prefix = |b: usize| -> Vec<Input> {
                cols.iter()
                    .zip(&ragged)
                    .zip(model.inputs())
                    .map(|((c, r), f)| match (c, r) {
                        (_, Some((ids, offsets))) => Input::RaggedIds {
                            ids: &ids[..offsets[b] as usize],
                            offsets: &offsets[..=b],
                        },
                        (Column::Ids(v), None) => Input::Ids(&v[..b * f.values_per_sample()]),
                        (Column::Floats(v), None) => Input::Floats(&v[..b * f.values_per_sample()]),
                    })
                    .collect()
            };
            let prefixes: Vec<Vec<Input>> = (0..=batch).map(prefix).collect();
            // The same inputs as embedding vectors: sparse as Floats, sequences ragged.
            let vectors: Vec<(Vec<f32>, Vec<i64>)> = model
                .inputs()
                .iter()
                .enumerate()
                .zip(&prefixes[batch])
                .map(|((i, f), input)| {
                    let mut floats = Vec::new();
                    let mut offsets = vec![0i64];
                    for s in 0..batch {
                        let ids: &[i64] = match *input {
                            Input::Ids(v) => &v[s..s + 1],
                            Input::RaggedIds { ids, offsets } => {
                                &ids[offsets[s] as usize..offsets[s + 1] as usize]
                            }
                            Input::Floats(_) | Input::RaggedFloats { .. } => &[],
                        };
                        for &id in ids
                            .iter()
                            .filter(|&&id| id != 0 || f.kind != ple::InputKind::Sequence)
                        {
                            let mut row = vec![0f32; f.width];
                            model.embedding_row(i, id, &mut row).unwrap();
                            floats.extend(row);
                        }
                        offsets.push((floats.len() / f.width.max(1)) as i64);
                    }
                    (floats, offsets)
                })
                .collect();
            let vector_inputs: Vec<Input> = model
                .inputs()
                .iter()
                .zip(&vectors)
                .zip(&prefixes[batch])
                .map(|((f, (floats, offsets)), input)| match f.kind {
                    ple::InputKind::Dense => *input,
                    ple::InputKind::Sparse => Input::Floats(floats),
                    ple::InputKind::Sequence => Input::RaggedFloats { floats, offsets },
                })
                .collect();
            // Built before counting: one malformed column per kind of error.
            let (ids, offsets) = ragged[q].as_ref().unwrap();
            let mut bad_offsets: Vec<Vec<i64>> = vec![offsets.clone(); 4];
            bad_offsets[0][0] = 1; // offsets[0] != 0
            bad_offsets[1][5] = bad_offsets[1][6] + 1; // decreasing
            *bad_offsets[2].last_mut().unwrap() -= 1; // last != ids.len()
            bad_offsets[3].pop(); // batch offsets, not batch + 1
            let mut bad_ids = ids.clone();
            bad_ids[7] = 1 << 40;
            let too_long: Vec<i64> = (0..=batch as i64).map(|s| s * 10).collect();
            let long_ids = vec![1i64; batch * 10];
            let mut bad: Vec<Vec<Input>> = bad_offsets
                .iter()
                .map(|o| {
                    let mut v = prefixes[batch].clone();
                    v[q] = Input::RaggedIds { ids, offsets: o };
                    v
                })
                .collect();
            for (i, o) in [(&bad_ids, offsets), (&long_ids, &too_long)] {
                let mut v = prefixes[batch].clone();
                v[q] = Input::RaggedIds { ids: i, offsets: o };
                bad.push(v);
            }
            let mut out = vec![0f32; batch * model.output_width()];
            let mut gates = vec![0f32; batch * model.gate_width()];
            let mut single = Session::new(&model, batch).unwrap();
            let mut pooled = Session::with_pool(&model, batch, pool).unwrap();
            pooled.set_min_parallel_batch(1);
            let (ow, gw) = (model.output_width(), model.gate_width());
            let during = count_allocations(|| {
                for session in [&mut single, &mut pooled] {
                    for call in 0..60usize {
                        let b = (call * 37 + 1) % (batch + 1);
                        session
                            .run(
                                &prefixes[b],
                                b,
                                &mut out[..b * ow],
                                Some(&mut gates[..b * gw]),
                            )
                            .unwrap();
                        calls += 1;
                    }
                    for inputs in &bad {
                        assert!(session.run(inputs, batch, &mut out, None).is_err());
                    }
                    for _ in 0..4 {
                        session
                            .run(&vector_inputs, batch, &mut out, Some(&mut gates))
                            .unwrap();
                    }
                }
            });
            assert_eq!(
                during, 0,
                "ragged {dtype:?} {level:?}: {during} allocations while scoring"
            );
        }
    }
    eprintln!(
        "{calls} ragged scoring calls (f32, f16, every level, 1 and {} threads), their errors and embedding-vector calls: 0 allocations",
        pool.threads()
    );
}

/// Every fixture, on one thread or (with `pool`) split across the pool even for small batches.
fn scoring_allocates_nothing(pool: Option<&Pool>) {
    let dirs = fixture_dirs();
    assert!(!dirs.is_empty(), "no fixtures");
    let mut calls = 0u64;
    for dir in &dirs {
        for file in ["model.ple", "model_f16.ple"] {
            for level in SimdLevel::available() {
                let model = open_at(dir.join(file), level);
                let (cols, batch) = load_inputs(&model, dir);
                // Every prefix size must be valid input: take samples 0..b of each column.
                let max_batch = batch;
                let mut session = match pool {
                    None => Session::new(&model, max_batch).unwrap(),
                    Some(p) => {
                        let mut s = Session::with_pool(&model, max_batch, p).unwrap();
                        s.set_min_parallel_batch(1);
                        s
                    }
                };
                let inputs: Vec<Input> = cols.iter().map(Column::as_input).collect();
                let per: Vec<usize> = model
                    .inputs()
                    .iter()
                    .map(|f| f.values_per_sample())
                    .collect();
                let mut prefixes: Vec<Vec<Input>> = Vec::new();
                for b in 0..=batch {
                    prefixes.push(
                        inputs
                            .iter()
                            .zip(&per)
                            .map(|(i, &p)| match *i {
                                Input::Ids(v) => Input::Ids(&v[..b * p]),
                                Input::Floats(v) => Input::Floats(&v[..b * p]),
                                Input::RaggedIds { .. } | Input::RaggedFloats { .. } => {
                                    unreachable!("padded columns")
                                }
                            })
                            .collect(),
                    );
                }
                let mut out = vec![0f32; batch * model.output_width()];
                let mut gates = vec![0f32; batch * model.gate_width()];
                let mut bad_ids: Vec<Vec<i64>> = Vec::new();
                for (f, c) in model.inputs().iter().zip(&cols) {
                    if let Column::Ids(v) = c {
                        let mut v = v.clone();
                        v[0] = f.vocab() as i64 + 5;
                        bad_ids.push(v);
                    }
                }

                // Built before counting: the inputs with one out-of-range id.
                let bad_inputs: Option<Vec<Input>> = bad_ids.first().map(|bad| {
                    let mut v = inputs.clone();
                    let idx = model
                        .inputs()
                        .iter()
                        .position(|f| f.kind != ple::InputKind::Dense)
                        .unwrap();
                    v[idx] = Input::Ids(bad);
                    v
                });

                let during = count_allocations(|| {
                    for call in 0..200usize {
                        let b = (call * 7 + 1) % (batch + 1);
                        let ow = model.output_width();
                        let gw = model.gate_width();
                        let with_gates = call % 2 == 0;
                        let g = if with_gates {
                            Some(&mut gates[..b * gw])
                        } else {
                            None
                        };
                        session.run(&prefixes[b], b, &mut out[..b * ow], g).unwrap();
                        calls += 1;
                    }
                    // Error paths: too large a batch, a wrong output length, an out-of-range id.
                    let ow = model.output_width();
                    let too_big = session.run(&prefixes[batch], batch + 1, &mut out, None);
                    assert!(too_big.is_err());
                    let short =
                        session.run(&prefixes[batch], batch, &mut out[..batch * ow - 1], None);
                    assert!(short.is_err());
                    if let Some(bad) = &bad_inputs {
                        assert!(session.run(bad, batch, &mut out, None).is_err());
                    }
                });
                assert_eq!(
                    during,
                    0,
                    "{} {file} {level:?}, {} threads: {during} allocations while scoring",
                    name(dir),
                    session.threads()
                );
            }
        }
    }
    eprintln!(
        "{calls} scoring calls across {} fixtures, {} threads: 0 allocations",
        dirs.len(),
        pool.map_or(1, Pool::threads)
    );
}

/// Batches of up to 1000 split across the pool by two sessions at once (one of them then runs on
/// its own thread), counted on every thread.
fn large_batches_on_a_shared_pool_allocate_nothing(pool: &Pool) {
    let shape = Shape {
        expert_dims: vec![64, 16],
        ..Shape::default()
    };
    let model = Model::from_bytes(&synth::ple(&shape, 1).to_bytes()).unwrap();
    let batch = 1000;
    let cols = synth::inputs(&model, batch, 3);
    let inputs: Vec<Input> = cols.iter().map(Column::as_input).collect();
    assert!(model.inputs().len() <= 8);
    let callers = 2;
    let (ready, start, end) = (
        Barrier::new(callers + 1),
        Barrier::new(callers + 1),
        Barrier::new(callers + 1),
    );
    std::thread::scope(|scope| {
        for t in 0..callers {
            let (model, inputs, ready, start, end) = (&model, &inputs, &ready, &start, &end);
            scope.spawn(move || {
                let mut session = Session::with_pool(model, batch, pool).unwrap();
                let mut out = vec![0f32; batch * model.output_width()];
                let mut gates = vec![0f32; batch * model.gate_width()];
                ready.wait();
                start.wait();
                for call in 0..100 {
                    let b = batch - (call * 37 + t * 11) % 400;
                    // The first `b` samples of each column, in an array on the stack.
                    let mut cols = [Input::Ids(&[]); 8];
                    for ((c, i), f) in cols.iter_mut().zip(inputs).zip(model.inputs()) {
                        let per = f.values_per_sample();
                        *c = match *i {
                            Input::Ids(v) => Input::Ids(&v[..b * per]),
                            Input::Floats(v) => Input::Floats(&v[..b * per]),
                            Input::RaggedIds { .. } | Input::RaggedFloats { .. } => {
                                unreachable!("padded columns")
                            }
                        };
                    }
                    let n = inputs.len();
                    let (ow, gw) = (model.output_width(), model.gate_width());
                    session
                        .run(
                            &cols[..n],
                            b,
                            &mut out[..b * ow],
                            Some(&mut gates[..b * gw]),
                        )
                        .unwrap();
                }
                end.wait();
            });
        }
        ready.wait();
        let during = count_allocations(|| {
            start.wait();
            end.wait();
        });
        assert_eq!(
            during, 0,
            "{during} allocations while two sessions shared a pool"
        );
    });
    eprintln!(
        "200 calls of up to 1000 samples by two sessions sharing a {}-thread pool: 0 allocations",
        pool.threads()
    );
}
