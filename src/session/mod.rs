//! Scoring: a [`Session`] holds the working memory allocated once when it is created and runs the
//! scoring calls, which allocate nothing, errors included.
//!
//! A batch is validated completely (lengths, kinds, every id) before anything is computed, so a
//! failed call never leaves a partly written output. It is then cut into tiles of up to
//! `Plan::tile_rows` samples (64, or 128 for models whose weights stream from memory), and
//! `tile.rs` runs each tile through the whole plan in an arena, activations kept there while the
//! weights stream through. Without a pool, or below the session's parallel threshold, the tiles
//! run one after another on the calling thread; with a pool, each worker (the calling thread is
//! the first) takes tiles from a shared counter and runs them in an arena of its own. Every
//! sample's results are the same either way, bit for bit.

mod tile;

use std::any::Any;
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{BufferName, Error, RaggedProblem, Result};
use crate::model::graph::{Feature, InputKind};
use crate::model::Model;
use crate::pool::{panic_message, Pool};
use tile::{effective_id, Tile};

/// The largest `max_batch` a session accepts.
pub const MAX_BATCH_LIMIT: usize = 1 << 24;

/// The fewest samples a tile gets when a batch is shared among workers: smaller tiles would read
/// every weight for too few samples.
pub const MIN_PARALLEL_TILE_ROWS: usize = 16;

/// The least dense-layer work (multiply-adds ×2, `Model::flops_per_sample` × batch) a call must
/// have to be split across a pool: about 130–200 µs on one core of the development machine,
/// several times the 20–50 µs it took there to wake a sleeping worker (docs/DESIGN.md,
/// "Threads").
pub const MIN_PARALLEL_FLOPS: u64 = 8_000_000;

/// One input column: the values of one feature for the whole batch.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Sparse (`batch` ids) or sequence (`batch × max_len` ids, row-major, padded) features.
    Ids(&'a [i64]),
    /// Dense features: `batch × width` floats, row-major. For a sparse feature, its embedding
    /// vectors instead of ids (`batch × width`: what its table holds for each id, f16 tables
    /// widened to f32); for a sequence feature without a pad id, padded vectors (`batch ×
    /// max_len × width`; every position counts, as with ids).
    Floats(&'a [f32]),
    /// A sequence feature's ids, ragged (TorchRec's jagged form): sample `s` holds
    /// `ids[offsets[s]..offsets[s + 1]]`. `offsets` has `batch + 1` entries, starts at 0, never
    /// decreases and ends at `ids.len()`; each sample holds at most `max_len` ids. Pooled exactly
    /// as the padded form with the short samples padded by the input's pad id (an input without
    /// a pad id counts every position, so each of its samples must hold exactly `max_len` ids).
    RaggedIds { ids: &'a [i64], offsets: &'a [i64] },
    /// A sequence feature's embedding vectors, ragged: sample `s` holds vectors
    /// `offsets[s]..offsets[s + 1]` of `floats` (each `width` floats: the vectors of its real
    /// ids, in order, padding left out). Offsets as for `RaggedIds`. (Embedding vectors of a
    /// sparse feature, or padded ones of a sequence feature without a pad id, come as
    /// `Floats`.)
    RaggedFloats {
        floats: &'a [f32],
        offsets: &'a [i64],
    },
}

impl<'a> Input<'a> {
    /// The ids of sample `s` of a validated sparse or sequence column (none for floats).
    #[inline]
    pub(crate) fn sample_ids(&self, f: &Feature, s: usize) -> &'a [i64] {
        match *self {
            Input::Ids(ids) => {
                let per = f.values_per_sample();
                &ids[s * per..(s + 1) * per]
            }
            Input::RaggedIds { ids, offsets } => &ids[offsets[s] as usize..offsets[s + 1] as usize],
            Input::Floats(_) | Input::RaggedFloats { .. } => &[],
        }
    }
}

/// Scores batches for one thread at a time. Create one per thread over a shared [`Model`]; give it
/// a [`Pool`] (`Session::with_pool`) to run large batches on several cores.
pub struct Session {
    model: Model,
    max_batch: usize,
    /// Samples each arena holds: `min(max_batch, tile_rows)`.
    rows: usize,
    /// One per worker; `arenas[0]` is the calling thread's.
    arenas: Box<[Arena]>,
    pool: Option<Pool>,
    /// Batches smaller than this run on the calling thread alone.
    min_parallel_batch: usize,
}

/// One worker's working memory: `rows × plan width` floats.
struct Arena {
    floats: UnsafeCell<Box<[f32]>>,
    /// Set while a task of a parallel call uses `floats`.
    claimed: AtomicBool,
}

// SAFETY: `floats` is reached from a shared `&Arena` only through `Arena::claim`, whose flag gives
// one task at a time exclusive access; otherwise only through `&mut Arena`.
unsafe impl Sync for Arena {}

/// Exclusive use of an arena by one task; released when dropped.
struct Claim<'a>(&'a Arena);

impl Arena {
    fn new(floats: usize) -> Arena {
        Arena {
            floats: UnsafeCell::new(vec![0.0; floats].into_boxed_slice()),
            claimed: AtomicBool::new(false),
        }
    }

    fn claim(&self) -> Option<Claim<'_>> {
        self.claimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Claim(self))
    }
}

impl Claim<'_> {
    fn floats(&mut self) -> &mut [f32] {
        // SAFETY: the claim flag was set by this claim and is cleared only when it drops, so no
        // other reference to the floats exists meanwhile.
        unsafe { &mut *self.0.floats.get() }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.claimed.store(false, Ordering::Release);
    }
}

/// How one call's batch is cut into tiles: tile `t` is samples `t·rows .. min((t+1)·rows, batch)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Split {
    batch: usize,
    rows: usize,
    tiles: usize,
}

impl Split {
    /// For one worker, full tiles of `max_rows` (the last one partial). For several, the number of
    /// tiles is rounded up to a multiple of `workers` and the samples are shared evenly among
    /// them, so that every worker gets the same amount of work.
    fn new(batch: usize, max_rows: usize, workers: usize) -> Split {
        let mut rows = max_rows;
        if workers > 1 {
            let tiles = batch.div_ceil(max_rows).next_multiple_of(workers);
            rows = batch.div_ceil(tiles.max(1));
        }
        Split {
            batch,
            rows,
            tiles: batch.div_ceil(rows.max(1)),
        }
    }

    /// `(first sample, samples)` of tile `t`.
    fn tile(&self, t: usize) -> (usize, usize) {
        let start = t * self.rows;
        (start, self.rows.min(self.batch - start))
    }
}

/// An output buffer shared by the tasks of one parallel call, each writing the rows of the
/// samples of its own tiles.
struct SharedRows<'a> {
    ptr: *mut f32,
    len: usize,
    width: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: a plain pointer to caller memory borrowed mutably for 'a; `rows` hands out disjoint
// sample ranges (its contract), so tasks on different threads never touch the same float.
unsafe impl Sync for SharedRows<'_> {}

impl<'a> SharedRows<'a> {
    fn new(buffer: &'a mut [f32], width: usize) -> SharedRows<'a> {
        SharedRows {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            width,
            _buffer: PhantomData,
        }
    }

    /// The rows of samples `start..start + n`.
    ///
    /// # Safety
    /// No other reference to these samples' rows exists while the result lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn rows(&self, start: usize, n: usize) -> &mut [f32] {
        let (from, len) = (start * self.width, n * self.width);
        assert!(from + len <= self.len, "rows out of range");
        // SAFETY: in bounds (asserted) of a buffer borrowed mutably for 'a; exclusive per the
        // contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(from), len) }
    }
}

/// The first panic of a call's tasks.
type FirstPanic = Mutex<Option<Box<dyn Any + Send>>>;

fn panicked(payload: Box<dyn Any + Send>) -> Error {
    Error::Panic {
        message: Arc::from(panic_message(&*payload)),
    }
}

impl Session {
    /// Allocates the working memory for batches of up to `max_batch` samples. This is the last
    /// allocation: scoring allocates nothing. Every call runs on the calling thread.
    pub fn new(model: &Model, max_batch: usize) -> Result<Session> {
        Self::create(model, max_batch, None)
    }

    /// As [`Session::new`], and batches of at least [`Session::min_parallel_batch`] samples are
    /// split across `pool`'s threads (the calling thread is one of them). Allocates one tile of
    /// working memory per thread the pool may use (at most one per 16 samples of `max_batch`).
    /// Results are bit-identical to a session without a pool. The session holds its own handle
    /// to the pool. If another session's call is using the pool at the same moment, a call runs
    /// on its own thread alone rather than wait.
    pub fn with_pool(model: &Model, max_batch: usize, pool: &Pool) -> Result<Session> {
        Self::create(model, max_batch, Some(pool.clone()))
    }

    fn create(model: &Model, max_batch: usize, pool: Option<Pool>) -> Result<Session> {
        if max_batch == 0 || max_batch > MAX_BATCH_LIMIT {
            return Err(Error::InvalidMaxBatch {
                max_batch,
                limit: MAX_BATCH_LIMIT,
            });
        }
        let plan = &model.inner().plan;
        let rows = max_batch.min(plan.tile_rows);
        let workers = pool.as_ref().map_or(1, |p| {
            p.threads()
                .min(max_batch.div_ceil(MIN_PARALLEL_TILE_ROWS))
                .max(1)
        });
        Ok(Session {
            model: model.clone(),
            max_batch,
            rows,
            arenas: (0..workers)
                .map(|_| Arena::new(rows * plan.floats_per_row()))
                .collect(),
            min_parallel_batch: default_min_parallel_batch(model),
            pool,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The pool the session splits large batches across, if any.
    pub fn pool(&self) -> Option<&Pool> {
        self.pool.as_ref()
    }

    /// The most threads one call runs on (1 without a pool).
    pub fn threads(&self) -> usize {
        self.arenas.len()
    }

    /// The smallest batch that is split across the pool; smaller ones run on the calling thread.
    pub fn min_parallel_batch(&self) -> usize {
        self.min_parallel_batch
    }

    /// Sets the smallest batch that is split across the pool (the default is measured per model
    /// size; see docs/DESIGN.md, "Threads"). Results do not depend on it, only speed does.
    pub fn set_min_parallel_batch(&mut self, batch: usize) {
        self.min_parallel_batch = batch.max(1);
    }

    /// Bytes of working memory this session holds (all its threads' arenas).
    pub fn scratch_bytes(&self) -> usize {
        self.arenas.len() * self.rows * self.model.inner().plan.floats_per_row() * 4
    }

    /// Scores a model whose only input is one dense vector per sample (`batch × width` floats).
    pub fn run_dense(&mut self, x: &[f32], batch: usize, out: &mut [f32]) -> Result<()> {
        self.run(&[Input::Floats(x)], batch, out, None)
    }

    /// Scores `batch` samples. `inputs` has one column per model input, in `Model::inputs` order.
    /// `out` receives `batch × output_width` floats; `gates`, if given, `batch × gate_width`.
    /// On error nothing is written, except after [`Error::Panic`] and
    /// [`Error::ExecutorContract`] (a bug, or a broken executor), which may leave them partly
    /// written.
    pub fn run(
        &mut self,
        inputs: &[Input],
        batch: usize,
        out: &mut [f32],
        gates: Option<&mut [f32]>,
    ) -> Result<()> {
        self.validate(inputs, batch, out, gates.as_deref())?;
        let workers = self.workers_for(batch);
        let split = Split::new(batch, self.rows, workers);
        match &self.pool {
            Some(pool) if workers > 1 => {
                self.run_parallel(pool, workers, split, inputs, out, gates)
            }
            _ => self.run_here(split, inputs, out, gates),
        }
    }

    /// How many workers share a batch of `batch` samples.
    fn workers_for(&self, batch: usize) -> usize {
        if batch < self.min_parallel_batch {
            return 1;
        }
        self.arenas
            .len()
            .min(batch.div_ceil(MIN_PARALLEL_TILE_ROWS))
            .max(1)
    }

    /// Runs every tile on the calling thread, in arena 0.
    fn run_here(
        &mut self,
        split: Split,
        inputs: &[Input],
        out: &mut [f32],
        mut gates: Option<&mut [f32]>,
    ) -> Result<()> {
        let plan = &self.model.inner().plan;
        let (ow, gw) = (plan.output_width, plan.gate_width);
        let mut tile = Tile {
            model: &self.model,
            arena: self.arenas[0].floats.get_mut(),
            batch: split.batch,
            requested_until: 0,
        };
        panic::catch_unwind(AssertUnwindSafe(|| {
            for t in 0..split.tiles {
                let (start, rows) = split.tile(t);
                let gates = gates
                    .as_deref_mut()
                    .map(|g| &mut g[start * gw..(start + rows) * gw]);
                tile.run(
                    inputs,
                    start,
                    rows,
                    &mut out[start * ow..(start + rows) * ow],
                    gates,
                );
            }
        }))
        .map_err(panicked)
    }

    /// Runs the tiles on `workers` tasks of the pool: task `w` claims arena `w` and takes tiles
    /// from a shared counter until none are left.
    fn run_parallel(
        &self,
        pool: &Pool,
        workers: usize,
        split: Split,
        inputs: &[Input],
        out: &mut [f32],
        gates: Option<&mut [f32]>,
    ) -> Result<()> {
        let plan = &self.model.inner().plan;
        let out = SharedRows::new(out, plan.output_width);
        let gates = gates.map(|g| SharedRows::new(g, plan.gate_width));
        let next_tile = AtomicUsize::new(0);
        let tiles_done = AtomicUsize::new(0);
        let double_claim = AtomicBool::new(false);
        let first_panic: FirstPanic = Mutex::new(None);
        let task = |w: usize| {
            let Some(mut claim) = self.arenas.get(w).and_then(Arena::claim) else {
                double_claim.store(true, Ordering::Relaxed);
                return;
            };
            let mut tile = Tile {
                model: &self.model,
                arena: claim.floats(),
                batch: split.batch,
                requested_until: 0,
            };
            let ran = panic::catch_unwind(AssertUnwindSafe(|| loop {
                let t = next_tile.fetch_add(1, Ordering::Relaxed);
                if t >= split.tiles {
                    break;
                }
                let (start, rows) = split.tile(t);
                // SAFETY: tile `t` was taken by this task alone (one counter hands out each
                // index once), and tiles cover disjoint samples.
                let (o, g) = unsafe {
                    (
                        out.rows(start, rows),
                        gates.as_ref().map(|g| g.rows(start, rows)),
                    )
                };
                tile.run(inputs, start, rows, o, g);
                tiles_done.fetch_add(1, Ordering::AcqRel);
            }));
            if let Err(payload) = ran {
                // Stop the other tasks early: the call has failed.
                next_tile.store(split.tiles, Ordering::Relaxed);
                let mut first = first_panic.lock().unwrap_or_else(PoisonError::into_inner);
                first.get_or_insert(payload);
            }
        };
        pool.run(workers, &task);
        let first = first_panic
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(payload) = first {
            return Err(panicked(payload));
        }
        if double_claim.load(Ordering::Relaxed) {
            return Err(Error::ExecutorContract(
                "it ran a task twice at once, or a task index out of range",
            ));
        }
        if tiles_done.load(Ordering::Acquire) != split.tiles {
            return Err(Error::ExecutorContract(
                "it returned before every task had run",
            ));
        }
        Ok(())
    }

    fn validate(
        &self,
        inputs: &[Input],
        batch: usize,
        out: &[f32],
        gates: Option<&[f32]>,
    ) -> Result<()> {
        let inner = self.model.inner();
        if batch > self.max_batch {
            return Err(Error::BatchTooLarge {
                batch,
                max_batch: self.max_batch,
            });
        }
        let features = &inner.graph.features;
        if inputs.len() != features.len() {
            return Err(Error::WrongInputCount {
                expected: features.len(),
                got: inputs.len(),
            });
        }
        for (f, input) in features.iter().zip(inputs) {
            let expected = batch * f.values_per_sample();
            let got = match (f.kind, input) {
                (InputKind::Dense, Input::Floats(x)) => x.len(),
                (InputKind::Sparse, Input::Floats(x)) => {
                    let expected = batch * f.width;
                    if x.len() != expected {
                        return Err(Error::WrongLength {
                            what: BufferName::Input(f.name.clone()),
                            expected,
                            got: x.len(),
                        });
                    }
                    continue;
                }
                (InputKind::Sequence, Input::Floats(x)) => {
                    if f.pad_id.is_some() {
                        return Err(Error::WrongInputKind {
                            feature: f.name.clone(),
                            expected: "ids, or its vectors ragged (it masks a pad id, and padded vectors cannot say which positions are padding)",
                        });
                    }
                    let expected = batch * f.max_len * f.width;
                    if x.len() != expected {
                        return Err(Error::WrongLength {
                            what: BufferName::Input(f.name.clone()),
                            expected,
                            got: x.len(),
                        });
                    }
                    continue;
                }
                (InputKind::Sequence, Input::RaggedFloats { floats, offsets }) => {
                    check_ragged_vectors(f, batch, floats, offsets)?;
                    continue;
                }
                (InputKind::Sparse | InputKind::Sequence, Input::Ids(_) | Input::RaggedIds { .. })
                    if f.table.is_none() =>
                {
                    return Err(Error::WrongInputKind {
                        feature: f.name.clone(),
                        expected: "embedding vectors (floats): this file has no table for it",
                    })
                }
                (InputKind::Sparse | InputKind::Sequence, Input::Ids(ids)) => {
                    if ids.len() == expected {
                        check_ids(f, ids)?;
                    }
                    ids.len()
                }
                (InputKind::Sequence, Input::RaggedIds { ids, offsets }) => {
                    check_ragged(f, batch, ids, offsets)?;
                    continue;
                }
                (InputKind::Dense, _) => {
                    return Err(Error::WrongInputKind {
                        feature: f.name.clone(),
                        expected: "floats (a dense feature)",
                    })
                }
                (InputKind::Sparse, Input::RaggedIds { .. } | Input::RaggedFloats { .. }) => {
                    return Err(Error::WrongInputKind {
                        feature: f.name.clone(),
                        expected:
                            "one id or vector per sample (a sparse feature: ragged columns are for sequences)",
                    })
                }
            };
            if got != expected {
                return Err(Error::WrongLength {
                    what: BufferName::Input(f.name.clone()),
                    expected,
                    got,
                });
            }
        }
        let expected = batch * inner.plan.output_width;
        if out.len() != expected {
            return Err(Error::WrongLength {
                what: BufferName::Output,
                expected,
                got: out.len(),
            });
        }
        if let Some(g) = gates {
            let expected = batch * inner.plan.gate_width;
            if g.len() != expected {
                return Err(Error::WrongLength {
                    what: BufferName::Gates,
                    expected,
                    got: g.len(),
                });
            }
        }
        Ok(())
    }
}

fn check_ids(f: &Feature, ids: &[i64]) -> Result<()> {
    let vocab = f.vocab();
    let per = f.values_per_sample();
    for (i, &id) in ids.iter().enumerate() {
        let e = effective_id(f, id);
        if e < 0 || e as u64 >= vocab as u64 {
            return Err(Error::IdOutOfRange {
                feature: f.name.clone(),
                sample: i / per,
                position: i % per,
                id,
                vocab,
            });
        }
    }
    Ok(())
}

/// Checks the offsets of a ragged column over `values` values (ids or vectors): `batch + 1` of
/// them, from 0, never decreasing; and each sample's length against `max_len` (exactly `max_len`
/// for an input without a pad id). The last offset is checked by the caller.
fn check_offsets(f: &Feature, batch: usize, offsets: &[i64]) -> Result<()> {
    if offsets.len() != batch + 1 {
        return Err(Error::WrongLength {
            what: BufferName::Offsets(f.name.clone()),
            expected: batch + 1,
            got: offsets.len(),
        });
    }
    let fail = |sample: usize, problem: RaggedProblem| Error::Ragged {
        feature: f.name.clone(),
        sample,
        problem,
    };
    if offsets[0] != 0 {
        return Err(fail(0, RaggedProblem::FirstOffset { first: offsets[0] }));
    }
    for s in 0..batch {
        let (start, end) = (offsets[s], offsets[s + 1]);
        if end < start {
            return Err(fail(s, RaggedProblem::Decreasing { start, end }));
        }
    }
    Ok(())
}

/// Checks a ragged vector column: offsets, `width` floats per vector, and each sample's length
/// (at most `max_len`; exactly `max_len` for an input without a pad id).
fn check_ragged_vectors(f: &Feature, batch: usize, floats: &[f32], offsets: &[i64]) -> Result<()> {
    check_offsets(f, batch, offsets)?;
    let last = offsets[batch];
    if (last as u64).checked_mul(f.width as u64) != Some(floats.len() as u64) {
        return Err(Error::Ragged {
            feature: f.name.clone(),
            sample: batch.saturating_sub(1),
            problem: RaggedProblem::LastOffsetVectors {
                last,
                floats: floats.len(),
                width: f.width,
            },
        });
    }
    for s in 0..batch {
        let (len, max_len) = ((offsets[s + 1] - offsets[s]) as usize, f.max_len);
        let problem = if len > max_len {
            RaggedProblem::TooLong { len, max_len }
        } else if f.pad_id.is_none() && len < max_len {
            RaggedProblem::NotFull { len, max_len }
        } else {
            continue;
        };
        return Err(Error::Ragged {
            feature: f.name.clone(),
            sample: s,
            problem,
        });
    }
    Ok(())
}

/// Checks a ragged column completely: its offsets, each sample's length against `max_len`, and
/// every id, the padding the padded form would hold included (as `check_ids` would see it).
fn check_ragged(f: &Feature, batch: usize, ids: &[i64], offsets: &[i64]) -> Result<()> {
    // Every offset first, so that a sample's slice below is in bounds.
    check_offsets(f, batch, offsets)?;
    let fail = |sample: usize, problem: RaggedProblem| Error::Ragged {
        feature: f.name.clone(),
        sample,
        problem,
    };
    let last = offsets[batch];
    if last as u64 != ids.len() as u64 {
        return Err(fail(
            batch.saturating_sub(1),
            RaggedProblem::LastOffset {
                last,
                values: ids.len(),
            },
        ));
    }
    let vocab = f.vocab();
    let in_range = |id: i64| {
        let e = effective_id(f, id);
        e >= 0 && (e as u64) < vocab as u64
    };
    for s in 0..batch {
        let sample = &ids[offsets[s] as usize..offsets[s + 1] as usize];
        let (len, max_len) = (sample.len(), f.max_len);
        if len > max_len {
            return Err(fail(s, RaggedProblem::TooLong { len, max_len }));
        }
        let pad = match f.pad_id {
            Some(pad) => pad,
            None if len == max_len => 0,
            None => return Err(fail(s, RaggedProblem::NotFull { len, max_len })),
        };
        let bad = sample
            .iter()
            .enumerate()
            .find(|&(_, &id)| !in_range(id))
            .map(|(p, &id)| (p, id))
            // The padded form's padding is looked up (and checked) as well.
            .or_else(|| (len < max_len && !in_range(pad)).then_some((len, pad)));
        if let Some((position, id)) = bad {
            return Err(Error::IdOutOfRange {
                feature: f.name.clone(),
                sample: s,
                position,
                id,
                vocab,
            });
        }
    }
    Ok(())
}

/// The smallest batch worth splitting across a pool for `model`: every worker must get at least
/// [`MIN_PARALLEL_TILE_ROWS`] samples, and the call at least [`MIN_PARALLEL_FLOPS`] of dense-layer
/// work (embedding lookups are not counted, so models whose work is mostly lookups split later
/// than they could; `Session::set_min_parallel_batch` tunes it).
fn default_min_parallel_batch(model: &Model) -> usize {
    let by_work = MIN_PARALLEL_FLOPS.div_ceil(model.flops_per_sample().max(1));
    usize::try_from(by_work)
        .unwrap_or(usize::MAX)
        .max(2 * MIN_PARALLEL_TILE_ROWS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn splits_share_samples_evenly() {
        // One worker: full tiles.
        assert_eq!(
            Split::new(300, 64, 1),
            Split {
                batch: 300,
                rows: 64,
                tiles: 5
            }
        );
        // Two workers: 5 tiles become 6 of 50.
        assert_eq!(Split::new(300, 64, 2).rows, 50);
        assert_eq!(Split::new(300, 64, 2).tiles, 6);
        assert_eq!(Split::new(256, 64, 2).tiles, 4);
        assert_eq!(Split::new(1024, 128, 2).tiles, 8);
        assert_eq!(Split::new(0, 64, 2).tiles, 0);
        for batch in 0..=700 {
            for workers in 1..=5 {
                for max_rows in [1, 7, 64, 128] {
                    let s = Split::new(batch, max_rows, workers);
                    assert!(s.rows <= max_rows);
                    let covered: usize = (0..s.tiles).map(|t| s.tile(t).1).sum();
                    assert_eq!(covered, batch, "{s:?}");
                    assert!((0..s.tiles).all(|t| s.tile(t).1 > 0), "{s:?}");
                }
            }
        }
    }

    fn model() -> Model {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/dense_ple/model.ple"
        ))
        .unwrap();
        Model::from_bytes(&bytes).unwrap()
    }

    /// A panic while scoring a tile, on the caller or on a worker, becomes `Error::Panic` of that
    /// call; the session and its pool then score normally.
    #[test]
    fn a_panic_in_a_tile_is_an_error_of_the_call() {
        let model = model();
        let batch = 200;
        let x: Vec<f32> = (0..batch * 8).map(|i| (i % 13) as f32 / 13.0).collect();
        let mut expected = vec![0f32; batch * model.output_width()];
        Session::new(&model, batch)
            .unwrap()
            .run_dense(&x, batch, &mut expected)
            .unwrap();
        let pool = Pool::new(2).unwrap();
        let mut sessions = vec![
            Session::new(&model, batch).unwrap(),
            Session::with_pool(&model, batch, &pool).unwrap(),
        ];
        sessions[1].set_min_parallel_batch(1);
        for s in &mut sessions {
            for sample in [0, 60, 120, 199] {
                let failed_before = tile::tests::FAILED.load(Ordering::Relaxed);
                tile::tests::fail_at(&model, Some(sample));
                let mut out = vec![0f32; batch * model.output_width()];
                let e = s.run_dense(&x, batch, &mut out).unwrap_err();
                tile::tests::fail_at(&model, None);
                assert!(tile::tests::FAILED.load(Ordering::Relaxed) > failed_before);
                assert!(
                    matches!(&e, Error::Panic { message } if message.contains(&format!("sample {sample}"))),
                    "{e}"
                );
                s.run_dense(&x, batch, &mut out).unwrap();
                assert_eq!(out, expected, "{} threads", s.threads());
            }
        }
    }
}
