//! The tile runner: a tile of samples (up to `Plan::tile_rows`) through the whole plan in one
//! worker's arena. `run_tile` is the unit every scoring path calls, on the caller's thread or on a
//! pool's: it stages the tile's inputs (embedding lookups, pooling, dense copies) into arena rows
//! `0..rows`, runs the plan over them and copies the results out. A sample's results depend only
//! on its own inputs, never on the tile it is in or the thread that runs it.

use std::time::{Duration, Instant};

use crate::format::DType;
use crate::kernels::activation::{self, ActArgs};
use crate::kernels::int8::{self, GemmI8, Quantized};
use crate::kernels::{self, Gemm, SimdLevel};
use crate::model::graph::{Act, Feature, InputKind, Layer, Pooling, TensorRef};
use crate::model::plan::Op;
use crate::model::{memory, Model};
use crate::session::Input;

/// A table lookup slower than this took a major page fault (a read from disk; 25-65 µs each on
/// this machine's virtual disk, 10-100 µs on NVMe): a resident row copies in nanoseconds, and a
/// minor fault (the page cached but not yet mapped) costs about 4 µs here.
const COLD_LOOKUP: Duration = Duration::from_micros(20);
/// The same for a whole sample's lookups: above a few dozen minor faults (a sample of the
/// benchmark's criteo model on a fresh mapping of a cached file: ~100 µs), well below a few dozen
/// disk reads (~1 ms).
const COLD_SAMPLE: Duration = Duration::from_micros(250);

/// One worker's working memory for one call: its arena (`tile_rows × plan width` floats) and the
/// model it scores.
pub(super) struct Tile<'a> {
    pub(super) model: &'a Model,
    pub(super) arena: &'a mut [f32],
    /// Samples in the whole call.
    pub(super) batch: usize,
    /// The table rows of samples below this were requested from the kernel already (cold rows,
    /// `stage_inputs`): a later tile of the call does not request them again.
    pub(super) requested_until: usize,
}

impl Tile<'_> {
    /// Scores samples `start..start + rows` of `inputs` (validated, `rows` at most the arena's
    /// rows) and writes their outputs to `out` and gate weights to `gates`, which hold exactly
    /// those samples' rows.
    pub(super) fn run(
        &mut self,
        inputs: &[Input],
        start: usize,
        rows: usize,
        out: &mut [f32],
        gates: Option<&mut [f32]>,
    ) {
        #[cfg(test)]
        tests::maybe_fail(self.model, start, rows);
        self.stage_inputs(inputs, start, rows);
        self.forward(rows);
        self.copy_results(rows, out, gates);
    }

    /// Writes x0 for samples `start..start+rows` into arena rows `0..rows`.
    fn stage_inputs(&mut self, inputs: &[Input], start: usize, rows: usize) {
        let inner = self.model.inner();
        let width = inner.plan.width;
        let level = inner.simd;
        // Large tables live in DRAM and ids are random: the table rows of sample s + AHEAD are
        // requested while sample s is copied, so the misses overlap with the copying. (Asking
        // for every row of the tile at once overflows the CPU's miss buffers and most of the
        // requests are dropped.)
        const AHEAD: usize = 2;
        let prefetch_sample = |s: usize| {
            for &(fi, _) in &inner.plan.inputs {
                let f = &inner.graph.features[fi];
                if let Some(table) = f.table {
                    for &id in inputs[fi].sample_ids(f, s) {
                        kernels::prefetch(self.model.row_ptr(&table, effective_id(f, id)));
                    }
                }
            }
        };
        for s in start..start + rows.min(AHEAD) {
            prefetch_sample(s);
        }
        // Cold rows (docs/DESIGN.md, "Cold start"): a row whose page is not in memory costs a page
        // fault, from disk if the file is not cached, and one thread takes its faults one after
        // another. Once a lookup is that slow, every row of the rest of the call is requested
        // from the kernel at once (`Model::request_row`), so that their reads overlap in the
        // disk's queue instead of waiting in line. Timed: the tile's first table lookup (a batch
        // of one then still has its other rows to request), then every sample. Two clock reads
        // per sample when everything is resident (one read costs 140 ns on this VM: per-lookup
        // timing of the first sample cost batch 1 a fifth of its time).
        let mut watch = self.model.fault_ahead() && self.requested_until < start + rows;
        let mut probe = watch;
        // A slow lookup or sample may also be this thread being descheduled (a loaded machine):
        // only major faults since the tile began (one getrusage per tile, one per slow sample)
        // confirm cold rows, so that a resident model never makes thousands of needless requests.
        let faults_before = if watch {
            memory::thread_major_faults()
        } else {
            None
        };
        let cold = || match (faults_before, memory::thread_major_faults()) {
            (Some(before), Some(now)) => now > before,
            _ => true,
        };
        for r in 0..rows {
            let s = start + r;
            if r + AHEAD < rows {
                prefetch_sample(s + AHEAD);
            }
            let sample_started = watch.then(Instant::now);
            let arena_row = &mut self.arena[r * width..(r + 1) * width];
            for &(fi, col) in &inner.plan.inputs {
                let f = &inner.graph.features[fi];
                let w = f.width;
                let dst = &mut arena_row[col..col + w];
                let started = (probe && f.table.is_some()).then(Instant::now);
                match (inputs[fi], f.kind) {
                    (Input::Floats(x), InputKind::Sequence) => {
                        let n = f.max_len * w;
                        pool_vectors(self.model, level, f, &x[s * n..(s + 1) * n], 0, dst);
                    }
                    (Input::Floats(x), _) => copy_floats(dst, &x[s * w..(s + 1) * w]),
                    (Input::RaggedFloats { floats, offsets }, _) => {
                        let (a, b) = (offsets[s] as usize, offsets[s + 1] as usize);
                        let vectors = &floats[a * w..b * w];
                        pool_vectors(self.model, level, f, vectors, f.max_len - (b - a), dst);
                    }
                    (Input::Ids(ids), InputKind::Sparse) => {
                        let table = f.table.expect("validated");
                        lookup(self.model, level, &table, effective_id(f, ids[s]), dst);
                    }
                    (Input::Ids(ids), _) => {
                        let l = f.max_len;
                        pool(self.model, level, f, &ids[s * l..(s + 1) * l], 0, dst);
                    }
                    (ragged @ Input::RaggedIds { .. }, _) => {
                        let ids = ragged.sample_ids(f, s);
                        pool(self.model, level, f, ids, f.max_len - ids.len(), dst);
                    }
                }
                if let Some(t) = started {
                    probe = false;
                    if t.elapsed() > COLD_LOOKUP && cold() {
                        // The rest of the call, not only of the tile: the deeper the disk's
                        // queue, the faster it serves random reads.
                        request_rows(self.model, inputs, s.max(self.requested_until), self.batch);
                        self.requested_until = self.batch;
                        watch = false;
                    }
                }
            }
            if watch && sample_started.is_some_and(|t| t.elapsed() > COLD_SAMPLE) && cold() {
                request_rows(
                    self.model,
                    inputs,
                    (s + 1).max(self.requested_until),
                    self.batch,
                );
                self.requested_until = self.batch;
                watch = false;
            }
        }
    }

    /// Applies a layer's activation to its outputs at column `out` of rows `0..rows`, unless the
    /// kernel already did (identity, ReLU).
    fn activate(&mut self, rows: usize, out: usize, layer: &Layer) {
        let width = self.model.inner().plan.width;
        let act = act_args(self.model, &layer.act, layer.n);
        if !matches!(act, ActArgs::Identity | ActArgs::Relu) {
            for r in 0..rows {
                let row = &mut self.arena[r * width + out..r * width + out + layer.n];
                activation::apply_row(&act, row);
            }
        }
    }

    /// Runs the plan on arena rows `0..rows`.
    fn forward(&mut self, rows: usize) {
        let model = self.model;
        let inner = model.inner();
        let width = inner.plan.width;
        for op in &inner.plan.ops {
            match *op {
                Op::Dense {
                    input,
                    ref layer,
                    out,
                    quant: Some(q),
                } => {
                    let cap = self.arena.len() / inner.plan.floats_per_row();
                    let arena = self.arena.as_mut_ptr();
                    let (ld, slots) = (inner.plan.quant_row_bytes, inner.plan.quant_slots);
                    let (k, code_len) = (layer.k, (rows - 1) * ld + int8::row_bytes(layer.k));
                    // SAFETY: the arena holds `cap` rows of `width` floats, then `cap` rows of
                    // `ld` code bytes, then `slots × cap` scales and as many zero points
                    // (`Plan::floats_per_row`); this slot's codes start `q.offset` bytes into
                    // each code row and its scales and zero points at `q.slot × cap`. These
                    // regions are disjoint from each other and from the rows' f32 columns.
                    let (codes, scale, zero) = unsafe {
                        let codes = (arena.add(cap * width) as *mut u8).add(q.offset);
                        let params = arena.add(cap * width + cap * ld / 4);
                        (
                            std::slice::from_raw_parts_mut(codes, code_len),
                            std::slice::from_raw_parts_mut(params.add(q.slot * cap), rows),
                            std::slice::from_raw_parts_mut(
                                params.add((slots + q.slot) * cap) as *mut i32,
                                rows,
                            ),
                        )
                    };
                    if q.fresh {
                        // SAFETY: rows 0..rows of the arena hold `k` floats from `input`; the
                        // int8 level was checked available at load.
                        unsafe {
                            int8::quantize_rows(
                                inner.int8,
                                rows,
                                k,
                                arena.add(input),
                                width,
                                layer.input_scale.map(|r| model.f32s(&r, k)),
                                codes,
                                ld,
                                scale,
                                zero,
                            )
                        };
                    }
                    let g = GemmI8 {
                        m: rows,
                        k,
                        n: layer.n,
                        a: Quantized {
                            codes,
                            ld,
                            scale,
                            zero,
                        },
                        w: model.int8_panels(&layer.weight),
                        bias: layer.bias.map(|b| model.f32s(&b, layer.n)),
                        // SAFETY: `out` is a column offset inside the arena row.
                        c: unsafe { arena.add(out) },
                        ldc: width,
                        relu: matches!(layer.act, Act::Relu),
                    };
                    // SAFETY: C covers columns out..out+n of rows 0..rows (disjoint from the
                    // codes); the codes were written for this input by this layer or an earlier
                    // one reading the same columns in this pass (`QuantSlot::fresh`); the weights
                    // have the panel16x4 length and were checked at load; k ≤ MAX_K (load).
                    unsafe { int8::gemm_i8(inner.int8, &g) };
                    self.activate(rows, out, layer);
                }
                Op::Dense {
                    input,
                    ref layer,
                    out,
                    quant: None,
                } => {
                    // Taken afresh for each layer: the row slices below reborrow the arena.
                    let arena = self.arena.as_mut_ptr();
                    let g = Gemm {
                        m: rows,
                        k: layer.k,
                        n: layer.n,
                        // SAFETY: `input` and `out` are column offsets inside the arena row
                        // (the plan allocated them below `width`); the pointers stay in bounds.
                        a: unsafe { arena.add(input) },
                        lda: width,
                        w: model
                            .panels(&layer.weight)
                            .expect("an f32 or f16 layer (int8 ones have a quant slot)"),
                        bias: layer.bias.map(|b| model.f32s(&b, layer.n)),
                        // SAFETY: as above.
                        c: unsafe { arena.add(out) },
                        ldc: width,
                        relu: matches!(layer.act, Act::Relu),
                    };
                    // SAFETY: A covers columns input..input+k and C columns out..out+n of rows
                    // 0..rows of the arena; the plan gives every layer a fresh output range, so
                    // they are disjoint; the weight slice has the panel16 length (checked at
                    // load); the SIMD level was checked available at load.
                    unsafe { kernels::gemm(inner.simd, &g) };
                    self.activate(rows, out, layer);
                }
                Op::Softmax { col, n } => {
                    for r in 0..rows {
                        activation::softmax(&mut self.arena[r * width + col..r * width + col + n]);
                    }
                }
                Op::Sigmoid { col, n } => {
                    for r in 0..rows {
                        activation::apply_row(
                            &ActArgs::Sigmoid,
                            &mut self.arena[r * width + col..r * width + col + n],
                        );
                    }
                }
                Op::Mix {
                    weights,
                    ref experts,
                    width: d,
                    out,
                } => {
                    let cols = &inner.plan.expert_cols[experts.clone()];
                    for r in 0..rows {
                        let row = &mut self.arena[r * width..(r + 1) * width];
                        let (head, tail) = row.split_at_mut(out);
                        let dst = &mut tail[..d];
                        dst.fill(0.0);
                        for (e, &ec) in cols.iter().enumerate() {
                            let w = head[weights + e];
                            for (o, &x) in dst.iter_mut().zip(&head[ec..ec + d]) {
                                *o += w * x;
                            }
                        }
                    }
                }
                Op::Dots {
                    ref pairs,
                    dim,
                    temperature,
                    out,
                } => {
                    let cols = &inner.plan.expert_cols[pairs.clone()];
                    for r in 0..rows {
                        let row = &mut self.arena[r * width..(r + 1) * width];
                        for (j, pair) in cols.chunks_exact(2).enumerate() {
                            let (q, k) =
                                (&row[pair[0]..pair[0] + dim], &row[pair[1]..pair[1] + dim]);
                            let dot = q.iter().zip(k).fold(0.0f32, |acc, (a, b)| acc + a * b);
                            row[out + j] = dot / temperature;
                        }
                    }
                }
                Op::Product { a, b, n, out } => {
                    for r in 0..rows {
                        let row = &mut self.arena[r * width..(r + 1) * width];
                        let (head, tail) = row.split_at_mut(out);
                        for j in 0..n {
                            tail[j] = head[a + j] * head[b + j];
                        }
                    }
                }
            }
        }
    }

    /// Copies the outputs (and gate weights) of arena rows `0..rows` to `out` (and `gates`),
    /// which hold exactly those samples' rows.
    fn copy_results(&self, rows: usize, out: &mut [f32], gates: Option<&mut [f32]>) {
        let plan = &self.model.inner().plan;
        let width = plan.width;
        for r in 0..rows {
            let arena_row = &self.arena[r * width..(r + 1) * width];
            let mut o = r * plan.output_width;
            for &(col, w) in &plan.outputs {
                out[o..o + w].copy_from_slice(&arena_row[col..col + w]);
                o += w;
            }
        }
        if let Some(gates) = gates {
            for r in 0..rows {
                let arena_row = &self.arena[r * width..(r + 1) * width];
                let mut o = r * plan.gate_width;
                for g in &plan.gates {
                    gates[o..o + g.width].copy_from_slice(&arena_row[g.col..g.col + g.width]);
                    o += g.width;
                }
            }
        }
    }
}

/// The id actually looked up: DeepCTR-Torch routes ids through f32.
#[inline]
/// Asks the kernel for the table rows of samples `from..to` (`Model::request_row`).
fn request_rows(model: &Model, inputs: &[Input], from: usize, to: usize) {
    let inner = model.inner();
    for s in from..to {
        for &(fi, _) in &inner.plan.inputs {
            let f = &inner.graph.features[fi];
            if let Some(table) = f.table {
                for &id in inputs[fi].sample_ids(f, s) {
                    model.request_row(&table, effective_id(f, id));
                }
            }
        }
    }
}

pub(super) fn effective_id(f: &Feature, id: i64) -> i64 {
    if f.ids_through_f32 {
        id as f32 as i64
    } else {
        id
    }
}

/// Copies (widening f16) row `id` of `table` into `dst`.
#[inline]
fn lookup(model: &Model, level: SimdLevel, table: &TensorRef, id: i64, dst: &mut [f32]) {
    let dim = table.cols;
    let base = id as usize * dim;
    match table.dtype {
        // In fixed 8-float chunks: `copy_from_slice` of a runtime length is a libc call, which for
        // one 16-float row costs more than the copy (5% of a criteo batch at 26 lookups/sample).
        DType::F32 => copy_floats(dst, &model.f32s(table, base + dim)[base..]),
        DType::F16 => kernels::widen_f16(level, &model.f16s(table, base + dim)[base..], dst),
        DType::I8 => unreachable!("tables are plain f32 or f16 (checked at load)"),
    }
}

/// `dst.copy_from_slice(src)` for short rows, without a call into libc.
#[inline]
fn copy_floats(dst: &mut [f32], src: &[f32]) {
    debug_assert_eq!(dst.len(), src.len());
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let s: &[f32; 8] = s.try_into().expect("chunks of 8");
        d.copy_from_slice(s);
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// Pools one sample's sequence into `dst` (FORMAT.md §3.4): `ids`, then `padding` positions
/// holding the input's pad id (a ragged sample: what its padded form would hold, validated).
fn pool(
    model: &Model,
    level: SimdLevel,
    f: &Feature,
    ids: &[i64],
    padding: usize,
    dst: &mut [f32],
) {
    let table = f.table.expect("validated");
    let pooling = f.pooling.expect("validated");
    // The pad comparison sees the id as the library did (after the f32 round trip, if any).
    let masked = |id: i64| f.pad_id == Some(effective_id(f, id));
    // Masked padding adds nothing to a sum or mean, and the same term to a max each time (max is
    // idempotent): one position of it gives the padded form's result bit for bit, without
    // walking up to max_len positions per sample.
    let pad = f.pad_id.unwrap_or(0);
    let padding = match pooling {
        _ if padding == 0 || !masked(pad) => padding,
        Pooling::Max => 1,
        Pooling::Sum | Pooling::Mean => 0,
    };
    // A small stack buffer for one embedding row; wide tables go through chunks of it.
    let mut buf = [0f32; 64];
    let dim = table.cols;
    match pooling {
        Pooling::Sum | Pooling::Mean => {
            dst.fill(0.0);
            let mut count = 0usize;
            let mut add = |id: i64| {
                if masked(id) {
                    return;
                }
                count += 1;
                for_each_chunk(
                    model,
                    level,
                    &table,
                    effective_id(f, id),
                    dim,
                    &mut buf,
                    |j, v| {
                        for (d, x) in dst[j..j + v.len()].iter_mut().zip(v) {
                            *d += x;
                        }
                    },
                );
            };
            ids.iter().for_each(|&id| add(id));
            (0..padding).for_each(|_| add(pad));
            if pooling == Pooling::Mean {
                if count == 0 {
                    dst.fill(0.0);
                } else {
                    let c = count as f32;
                    dst.iter_mut().for_each(|d| *d /= c);
                }
            }
        }
        Pooling::Max => {
            dst.fill(f32::NEG_INFINITY);
            let mut add = |id: i64| {
                let shift = if masked(id) { 1e9f32 } else { 0.0 };
                for_each_chunk(
                    model,
                    level,
                    &table,
                    effective_id(f, id),
                    dim,
                    &mut buf,
                    |j, v| {
                        for (d, &x) in dst[j..j + v.len()].iter_mut().zip(v) {
                            *d = d.max(x - shift);
                        }
                    },
                );
            };
            ids.iter().for_each(|&id| add(id));
            (0..padding).for_each(|_| add(pad));
        }
    }
}

/// Pools one sample's embedding vectors, given by the caller (`vectors`: `n × width` floats, the
/// vectors of its real ids), into `dst`, then `padding` positions of the input's pad id: exactly
/// what `pool` computes from the ids (the same additions in the same order). Only max pooling
/// sees padding: its `E[pad] − 1e9` term is read from the table when the file has one, and is
/// `−1e9` without one (the writer checks that every `E[pad]` is then below 32 in magnitude, where
/// `E[pad] − 1e9` rounds to `−1e9` in f32).
fn pool_vectors(
    model: &Model,
    level: SimdLevel,
    f: &Feature,
    vectors: &[f32],
    padding: usize,
    dst: &mut [f32],
) {
    let pooling = f.pooling.expect("validated");
    let rows = vectors.chunks_exact(f.width);
    match pooling {
        Pooling::Sum | Pooling::Mean => {
            dst.fill(0.0);
            let count = rows.len();
            for v in rows {
                for (d, x) in dst.iter_mut().zip(v) {
                    *d += x;
                }
            }
            if pooling == Pooling::Mean {
                if count == 0 {
                    dst.fill(0.0);
                } else {
                    let c = count as f32;
                    dst.iter_mut().for_each(|d| *d /= c);
                }
            }
        }
        Pooling::Max => {
            dst.fill(f32::NEG_INFINITY);
            for v in rows {
                for (d, &x) in dst.iter_mut().zip(v) {
                    *d = d.max(x - 0.0);
                }
            }
            match (padding, f.pad_id, f.table) {
                (0, _, _) | (_, None, _) => {}
                (_, Some(pad), Some(table)) => {
                    let mut buf = [0f32; 64];
                    let id = effective_id(f, pad);
                    for_each_chunk(model, level, &table, id, f.width, &mut buf, |j, v| {
                        for (d, &x) in dst[j..j + v.len()].iter_mut().zip(v) {
                            *d = d.max(x - 1e9f32);
                        }
                    });
                }
                (_, Some(_), None) => dst.iter_mut().for_each(|d| *d = d.max(0.0 - 1e9f32)),
            }
        }
    }
}

/// Calls `f(first column, values)` over row `id` of `table` in chunks of up to 64 floats.
#[inline]
fn for_each_chunk(
    model: &Model,
    level: SimdLevel,
    table: &TensorRef,
    id: i64,
    dim: usize,
    buf: &mut [f32; 64],
    mut f: impl FnMut(usize, &[f32]),
) {
    let base = id as usize * dim;
    match table.dtype {
        DType::F32 => {
            let all = model.f32s(table, base + dim);
            f(0, &all[base..]);
        }
        DType::F16 => {
            let all = model.f16s(table, base + dim);
            for (c, chunk) in all[base..].chunks(64).enumerate() {
                kernels::widen_f16(level, chunk, &mut buf[..chunk.len()]);
                f(c * 64, &buf[..chunk.len()]);
            }
        }
        DType::I8 => unreachable!("tables are plain f32 or f16 (checked at load)"),
    }
}

fn act_args<'m>(model: &'m Model, act: &Act, n: usize) -> ActArgs<'m> {
    match *act {
        Act::Identity => ActArgs::Identity,
        Act::Relu => ActArgs::Relu,
        Act::Sigmoid => ActArgs::Sigmoid,
        Act::Tanh => ActArgs::Tanh,
        Act::LeakyRelu(s) => ActArgs::LeakyRelu(s),
        Act::PRelu { param, per_channel } => {
            ActArgs::PRelu(model.f32s(&param, if per_channel { n } else { 1 }))
        }
        Act::DicePerSample { alpha, eps } => ActArgs::DicePerSample {
            alpha: model.f32s(&alpha, 1)[0],
            eps,
        },
        Act::DiceBn { param } => {
            let p = model.f32s(&param, 3 * n);
            ActArgs::DiceBn {
                scale: &p[..n],
                shift: &p[n..2 * n],
                alpha: &p[2 * n..],
            }
        }
        Act::Softmax => ActArgs::Softmax,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use crate::model::Model;

    /// `(model address, sample)`: a tile of that model holding that sample panics (tests only).
    static FAIL_AT: Mutex<Option<(usize, usize)>> = Mutex::new(None);
    pub(in crate::session) static FAILED: AtomicUsize = AtomicUsize::new(0);

    pub(in crate::session) fn fail_at(model: &Model, sample: Option<usize>) {
        *FAIL_AT.lock().unwrap() = sample.map(|s| (model.inner() as *const _ as usize, s));
    }

    pub(super) fn maybe_fail(model: &Model, start: usize, rows: usize) {
        let at = *FAIL_AT.lock().unwrap();
        if let Some((m, s)) = at {
            if m == model.inner() as *const _ as usize && (start..start + rows).contains(&s) {
                FAILED.fetch_add(1, Ordering::Relaxed);
                panic!("injected failure at sample {s}");
            }
        }
    }
}
