//! No heap allocation after `Session::new`: a counting global allocator watches thousands of
//! scoring calls (every fixture model kind, f32 and f16, every SIMD level, varying batch sizes)
//! and the error paths (batch > max_batch, wrong lengths, out-of-range ids).

use ple_testkit as common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use ple::{Input, Session, SimdLevel};

struct Counting;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls on this thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocations() -> u64 {
    COUNT.with(|c| c.get())
}

#[test]
fn scoring_allocates_nothing() {
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
                let mut session = Session::new(&model, max_batch).unwrap();
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

                let before = allocations();
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
                let short = session.run(&prefixes[batch], batch, &mut out[..batch * ow - 1], None);
                assert!(short.is_err());
                if let Some(bad) = &bad_inputs {
                    assert!(session.run(bad, batch, &mut out, None).is_err());
                }
                let during = allocations() - before;
                assert_eq!(
                    during,
                    0,
                    "{} {file} {level:?}: {during} allocations while scoring",
                    name(dir)
                );
            }
        }
    }
    eprintln!(
        "{calls} scoring calls across {} fixtures, 0 allocations",
        dirs.len()
    );
}
