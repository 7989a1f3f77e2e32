//! What the fuzz targets assert. Included by path from `tests/fuzz_regressions.rs` as well, so
//! it depends on nothing but `ple` and std.
//!
//! - [`check_load`]: `Model::from_bytes` on arbitrary bytes never panics; a file that loads can
//!   be scored: a session is created and a batch of valid inputs derived from the model's own
//!   input descriptions must score `Ok`, writing every output and gate float, deterministically.
//! - [`check_load_fixed_checksums`]: the same after recomputing both checksums of a copy, plus:
//!   a file that loads also passes the data-checksum verification.
//! - [`check_score`]: `Session::run` on fixed valid models with arbitrary batch sizes, buffer
//!   lengths, column counts, kinds, ids and floats (floats for an id input being its embedding
//!   vectors) returns `Ok` exactly when the call is valid
//!   by the documented contract, never panics, leaves the output and gate buffers untouched on
//!   `Err`, and on `Ok` writes every float, deterministically. With flag bit 0x80 its sequence
//!   columns come ragged (`Input::RaggedIds`: random lengths, pad ids inside samples, special
//!   ids, and in chaotic calls broken offsets), and a valid ragged call must score bit for bit
//!   what its padded form scores.

use std::cell::RefCell;

use crate::writer::fix_checksums;
use ple::{Input, InputKind, LoadOptions, Model, Session, SimdLevel};

/// A NaN with a payload no computation produces: a float still holding it was never written.
const SENTINEL_A: u32 = 0x7fc0_dead;
const SENTINEL_B: u32 = 0xffc0_beef;

/// Largest number of input values the harness itself allocates for one call in `check_load`
/// (a fuzzed file may legally declare 65,536 features of 65,536 ids each).
const MAX_HARNESS_VALUES: usize = 1 << 22;

// ---------------------------------------------------------------------------------------------
// Loading

/// `Model::from_bytes` on `data`; if it loads, exercise the model (with the kernel level chosen by
/// [`load_options`]).
pub fn check_load(data: &[u8]) {
    let opts = load_options(data);
    if let Ok(model) = Model::from_bytes_with(data, &opts) {
        exercise(&model);
    }
}

/// [`check_load`] on a copy of `data` whose checksums were recomputed, so that mutations get past
/// the CRC check into the structural validation.
pub fn check_load_fixed_checksums(data: &[u8]) {
    let mut file = data.to_vec();
    fix_checksums(&mut file);
    let opts = load_options(data);
    if let Ok(model) = Model::from_bytes_with(&file, &opts) {
        // Both checksums were just recomputed over exactly the bytes the verifier reads.
        if let Err(e) = model.verify_data(|_, _| {}) {
            panic!("file loads with fixed checksums but verify_data fails: {e}");
        }
        let verified = LoadOptions {
            verify_data: true,
            ..opts.clone()
        };
        if let Err(e) = Model::from_bytes_with(&file, &verified) {
            panic!("file loads with fixed checksums but not with verify_data: {e}");
        }
        exercise(&model);
    }
}

/// Scalar kernels when bit 0 of byte 60 is set, else the best level of the CPU. Byte 60 is the
/// first byte of the header's data CRC, which a default load does not check (and
/// `check_load_fixed_checksums` decides before recomputing it), so the fuzzer can flip it on any
/// valid file without making it invalid.
fn load_options(data: &[u8]) -> LoadOptions {
    LoadOptions {
        simd: (data.get(60).is_some_and(|b| b & 1 == 1)).then_some(SimdLevel::Scalar),
        ..LoadOptions::default()
    }
}

/// Everything a caller can do with a loaded model, with inputs that are valid by the model's own
/// description: none of it may fail or panic.
fn exercise(model: &Model) {
    let _ = (
        model.name(),
        model.format_version(),
        model.file_size(),
        model.simd_level(),
        model.weight_dtype(),
        model.n_tasks(),
        model.parameter_count(),
        model.flops_per_sample(),
        model.scratch_floats_per_sample(),
    );
    let out_w = model.output_width();
    let gate_w = model.gate_width();
    let listed: usize = model.outputs().map(|(_, w)| w).sum();
    assert_eq!(
        listed, out_w,
        "outputs() widths do not add up to output_width()"
    );
    let gate_sum: usize = model.gates().iter().map(|g| g.width).sum();
    assert_eq!(
        gate_sum, gate_w,
        "gates() widths do not add up to gate_width()"
    );
    for f in model.inputs() {
        let i = model.input_index(&f.name);
        assert!(
            i.is_some_and(|i| *model.inputs()[i].name == *f.name),
            "input_index({:?}) = {i:?}",
            f.name
        );
        if f.kind != InputKind::Dense && f.table.is_some() {
            assert!(f.vocab() > 0, "{} takes ids but has an empty table", f.name);
        }
    }
    assert!(Session::new(model, 0).is_err(), "max_batch 0 accepted");

    let per_sample: usize = model
        .inputs()
        .iter()
        .map(|f| match f.table {
            None if f.kind != InputKind::Dense => f.values_per_sample().saturating_mul(f.width),
            _ => f.values_per_sample(),
        })
        .fold(0usize, |a, b| a.saturating_add(b));
    let mut session = match Session::new(model, 3) {
        Ok(s) => s,
        Err(e) => panic!("Session::new(model, 3) failed on a loaded model: {e}"),
    };
    for batch in [0usize, 1, 3] {
        if per_sample.saturating_mul(batch) > MAX_HARNESS_VALUES {
            continue;
        }
        let cols = valid_columns(model, batch, batch as u64 + 1);
        let inputs: Vec<Input> = cols.iter().map(Column::as_input).collect();
        let gates = batch % 2 == 1;
        let (a, ga) = run_filled(
            &mut session,
            &inputs,
            batch,
            batch * out_w,
            gates,
            SENTINEL_A,
        );
        let (b, gb) = run_filled(
            &mut session,
            &inputs,
            batch,
            batch * out_w,
            gates,
            SENTINEL_B,
        );
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                panic!("valid batch of {batch} on a loaded model failed: {e}")
            }
        };
        // Every float written (else the two sentinels would show), and deterministically.
        assert_same_bits(&a, &b, "output");
        if gates {
            assert_eq!(ga.len(), batch * gate_w);
            assert_same_bits(&ga, &gb, "gates");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scoring

struct Fixture {
    name: &'static str,
    bytes: &'static [u8],
}

macro_rules! fixture {
    ($name:literal) => {
        Fixture {
            name: $name,
            bytes: include_bytes!(concat!("../../../tests/fixtures/", $name)),
        }
    };
}

/// The valid models `check_score` scores: every input kind, pooling, pad ids, f16 weights, ESMM
/// and dense-only graphs, graph nodes (AITM). New models go at the end: a seed's first byte picks
/// `byte % (2 × count)`, so earlier seeds (first bytes below 16) keep their model.
static FIXTURES: [Fixture; 9] = [
    fixture!("rechub_ple2/model.ple"),
    fixture!("rechub_ple2/model_f16.ple"),
    fixture!("deepctr_ple/model.ple"),
    fixture!("dense_ple/model.ple"),
    fixture!("rechub_esmm/model.ple"),
    fixture!("rechub_ple3_dice/model_f16.ple"),
    fixture!("deepctr_mmoe/model.ple"),
    fixture!("rechub_cgc/model.ple"),
    fixture!("rechub_aitm/model.ple"),
];

/// Max batch of the big session: more than one 64-row tile.
pub const BIG_MAX_BATCH: usize = 67;

struct Loaded {
    model: Model,
    /// `max_batch` 1 and `BIG_MAX_BATCH`.
    sessions: [Session; 2],
}

thread_local! {
    /// Index: fixture × {best SIMD, scalar}. Loaded once per process.
    static LOADED: RefCell<Vec<Option<Loaded>>> =
        RefCell::new((0..FIXTURES.len() * 2).map(|_| None).collect());
}

/// Reads the fuzz input as a stream of bytes; zeros once it runs out.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }
}

/// splitmix64, so a short fuzz input can still fill long valid columns.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn float(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0
    }
}

enum Column {
    Ids(Vec<i64>),
    Floats(Vec<f32>),
    /// Embedding vectors of a sequence, ragged (inputs without a table).
    RaggedFloats {
        floats: Vec<f32>,
        offsets: Vec<i64>,
    },
    /// A ragged sequence column and, when it is valid, its padded form.
    Ragged {
        ids: Vec<i64>,
        offsets: Vec<i64>,
        padded: Option<Vec<i64>>,
    },
}

impl Column {
    fn as_input(&self) -> Input<'_> {
        match self {
            Column::Ids(v) => Input::Ids(v),
            Column::Floats(v) => Input::Floats(v),
            Column::Ragged { ids, offsets, .. } => Input::RaggedIds { ids, offsets },
            Column::RaggedFloats { floats, offsets } => Input::RaggedFloats { floats, offsets },
        }
    }

    /// The padded form of a valid ragged column; other columns as they are.
    fn as_padded_input(&self) -> Input<'_> {
        match self {
            Column::Ragged {
                padded: Some(p), ..
            } => Input::Ids(p),
            c => c.as_input(),
        }
    }
}

/// A ragged column for sequence input `f` and `batch` samples, steered by the control byte
/// `ctl`: lengths (any up to max_len, all max_len, up to max_len + 1, or short), special ids,
/// pad ids inside samples and, in chaotic calls, one kind of broken offsets.
fn ragged_column(
    f: &ple::model::graph::Feature,
    batch: usize,
    ctl: u8,
    chaos: bool,
    r: &mut Reader,
    rng: &mut Rng,
) -> Column {
    let max_len = f.max_len as u64;
    let (mut ids, mut offsets) = (Vec::new(), vec![0i64]);
    for _ in 0..batch {
        let len = match ctl & 3 {
            0 => rng.below(max_len + 1),
            1 => max_len,
            2 => rng.below(max_len + 2),
            _ => rng.below(3).min(max_len),
        };
        for _ in 0..len {
            ids.push(valid_id(f, rng));
        }
        offsets.push(ids.len() as i64);
    }
    if ctl & 4 != 0 {
        for _ in 0..(r.u8() % 4) {
            let (k, pos) = (r.u8(), r.u8() as usize);
            if !ids.is_empty() {
                let n = ids.len();
                ids[pos % n] = special_id(f, k);
            }
        }
    }
    if ctl & 8 != 0 {
        let pad = f.pad_id.unwrap_or(0);
        for id in ids.iter_mut().step_by(3) {
            *id = pad;
        }
    }
    if chaos {
        let k = r.u8() as usize % offsets.len();
        match (ctl >> 4) & 7 {
            0 => offsets[0] = 1,
            1 => offsets[k] -= 1,
            2 => *offsets.last_mut().expect("batch + 1") += 1,
            3 => drop(offsets.pop()),
            4 => offsets.push(ids.len() as i64),
            5 => offsets[k] = -1,
            6 => offsets[k] = i64::MAX,
            _ => {}
        }
    }
    let padded = ragged_valid(f, batch, &ids, &offsets).then(|| {
        let pad = f.pad_id.unwrap_or(0);
        let mut p = Vec::with_capacity(batch * f.max_len);
        for w in offsets.windows(2) {
            let sample = &ids[w[0] as usize..w[1] as usize];
            p.extend_from_slice(sample);
            p.extend(std::iter::repeat_n(pad, f.max_len - sample.len()));
        }
        p
    });
    Column::Ragged {
        ids,
        offsets,
        padded,
    }
}

/// Whether the session must accept a ragged column (the documented contract, written out
/// independently of the session's own checks): batch + 1 offsets from 0, never decreasing, ending
/// at the number of ids; every sample at most max_len ids, exactly max_len without a pad id;
/// every id, and the pad id of a short sample, in range.
fn ragged_valid(
    f: &ple::model::graph::Feature,
    batch: usize,
    ids: &[i64],
    offsets: &[i64],
) -> bool {
    if offsets.len() != batch + 1 || offsets[0] != 0 || offsets[batch] != ids.len() as i64 {
        return false;
    }
    if offsets.windows(2).any(|w| w[1] < w[0]) {
        return false;
    }
    offsets.windows(2).all(|w| {
        let sample = &ids[w[0] as usize..w[1] as usize];
        let short = sample.len() < f.max_len;
        sample.len() <= f.max_len
            && sample.iter().all(|&id| id_in_range(f, id))
            && (!short || f.pad_id.is_some_and(|pad| id_in_range(f, pad)))
    })
}

/// One valid column per model input for `batch` samples.
fn valid_columns(model: &Model, batch: usize, seed: u64) -> Vec<Column> {
    let mut rng = Rng(seed);
    model
        .inputs()
        .iter()
        .map(|f| {
            let n = batch * f.values_per_sample();
            match f.kind {
                InputKind::Dense => Column::Floats((0..n).map(|_| rng.float()).collect()),
                // No table in the file: the caller's embedding vectors (full-length sequences,
                // ragged: valid with or without a pad id).
                InputKind::Sparse if f.table.is_none() => {
                    Column::Floats((0..batch * f.width).map(|_| rng.float()).collect())
                }
                InputKind::Sequence if f.table.is_none() => Column::RaggedFloats {
                    floats: (0..batch * f.max_len * f.width)
                        .map(|_| rng.float())
                        .collect(),
                    offsets: (0..=batch).map(|s| (s * f.max_len) as i64).collect(),
                },
                _ => Column::Ids((0..n).map(|_| valid_id(f, &mut rng)).collect()),
            }
        })
        .collect()
}

/// An id the session must accept for `f`: in `0..vocab`, and (for features whose ids go through
/// f32) one that f32 represents exactly.
fn valid_id(f: &ple::model::graph::Feature, rng: &mut Rng) -> i64 {
    let vocab = f.vocab() as u64;
    let mut id = rng.below(vocab) as i64;
    if f.ids_through_f32 {
        id = id.min((1 << 24) - 1).min(vocab.saturating_sub(1) as i64);
    }
    id
}

/// Whether the session accepts `id` for `f` (the documented rule: the id, after the f32 round
/// trip for features that have one, lies in `0..vocab`).
fn id_in_range(f: &ple::model::graph::Feature, id: i64) -> bool {
    let e = if f.ids_through_f32 {
        id as f32 as i64
    } else {
        id
    };
    e >= 0 && (e as u64) < f.vocab() as u64
}

const SPECIAL_FLOATS: [f32; 13] = [
    f32::NAN,
    -f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    f32::MAX,
    f32::MIN,
    f32::MIN_POSITIVE,
    1e-45,
    1e30,
    -1e30,
    88.8,
];

fn special_id(f: &ple::model::graph::Feature, k: u8) -> i64 {
    let vocab = f.vocab() as i64;
    match k % 14 {
        0 => -1,
        1 => i64::MIN,
        2 => i64::MAX,
        3 => vocab,
        4 => vocab - 1,
        5 => 0,
        6 => 1 << 24,
        7 => (1 << 24) + 1,
        8 => (1 << 53) + 1,
        9 => f.pad_id.unwrap_or(0),
        10 => -vocab,
        11 => vocab + 1,
        12 => i64::MAX - 1,
        _ => 1 << 63 >> 1,
    }
}

/// Scores one arbitrary call on a fixed valid model. Layout of `data` (all optional, zeros past
/// the end): model choice, batch, flags, then per-column control bytes and values, then buffer
/// modes.
pub fn check_score(data: &[u8]) {
    let mut r = Reader { data, pos: 0 };
    let pick = r.u8() as usize % (FIXTURES.len() * 2);
    LOADED.with(|cell| {
        let mut loaded = cell.borrow_mut();
        let slot = loaded[pick].get_or_insert_with(|| {
            let fx = &FIXTURES[pick / 2];
            let opts = LoadOptions {
                simd: (pick % 2 == 1).then_some(SimdLevel::Scalar),
                ..LoadOptions::default()
            };
            let model = Model::from_bytes_with(fx.bytes, &opts)
                .unwrap_or_else(|e| panic!("fixture {} does not load: {e}", fx.name));
            let sessions = [
                Session::new(&model, 1).unwrap(),
                Session::new(&model, BIG_MAX_BATCH).unwrap(),
            ];
            Loaded { model, sessions }
        });
        score_one(&mut r, slot);
    });
}

fn score_one(r: &mut Reader, loaded: &mut Loaded) {
    let model = loaded.model.clone();
    let features = model.inputs();
    let flags = r.u8();
    let session = &mut loaded.sessions[(flags & 1) as usize];
    let max_batch = session.max_batch();
    let batch = r.u8() as usize % (max_batch + 3);
    // Half the calls are well-formed (right columns, kinds and lengths; ids may still be out of
    // range); the other half perturb each column with some probability.
    let chaos = flags & 2 != 0;
    let mut rng = Rng(r.u64());

    let n_cols = if chaos && r.u8().is_multiple_of(4) {
        r.u8() as usize % (features.len() + 3)
    } else {
        features.len()
    };
    let mut expected_ok = batch <= max_batch && n_cols == features.len();
    let mut cols = Vec::with_capacity(n_cols);
    for i in 0..n_cols {
        let ctl = r.u8();
        let feature = features.get(i);
        let dense = match feature {
            Some(f) => f.kind == InputKind::Dense,
            None => ctl & 1 == 0,
        };
        let swap = chaos && ctl & 0x0e == 0; // 1 in 8 of the chaotic columns
        let as_floats = dense != swap;
        let per = feature.map_or(1, |f| f.values_per_sample());
        let expected = batch * per;
        let len = if chaos {
            match (ctl >> 4) & 7 {
                0 => expected.saturating_sub(1),
                1 => expected + 1,
                2 => r.u8() as usize,
                3 => expected + per,
                _ => expected,
            }
        } else {
            expected
        };
        let value_mode = ctl >> 6;
        let ragged = flags & 0x80 != 0
            && !as_floats
            && feature.is_some_and(|f| f.kind == InputKind::Sequence);
        // (A ragged column's length is its own: `ragged_column` decides its validity.) Floats for
        // a sparse or sequence input are its embedding vectors: valid at `width` floats per
        // id, and for a sequence only without a pad id (padded vectors cannot mark padding).
        let vectors_ok = |f: &ple::model::graph::Feature| match f.kind {
            InputKind::Sparse => len == batch * f.width,
            InputKind::Sequence => f.pad_id.is_none() && len == batch * f.max_len * f.width,
            InputKind::Dense => false,
        };
        let swapped_ok = swap && as_floats && feature.is_some_and(vectors_ok);
        if (swap && !swapped_ok) || (len != expected && !ragged && !swapped_ok) {
            expected_ok = false;
        }
        if let (true, Some(f)) = (ragged, feature) {
            let ctl = r.u8();
            let column = ragged_column(f, batch, ctl, chaos, r, &mut rng);
            if matches!(column, Column::Ragged { padded: None, .. }) {
                expected_ok = false;
            }
            cols.push(column);
        } else if as_floats {
            let v: Vec<f32> = match value_mode {
                2 => (0..len).map(|_| f32::from_bits(r.u32())).collect(),
                1 => {
                    let mut v: Vec<f32> = (0..len).map(|_| rng.float()).collect();
                    for _ in 0..(r.u8() % 4) {
                        let k = r.u8() as usize;
                        let pos = r.u8() as usize;
                        if !v.is_empty() {
                            let n = v.len();
                            v[pos % n] = SPECIAL_FLOATS[k % SPECIAL_FLOATS.len()];
                        }
                    }
                    v
                }
                _ => (0..len).map(|_| rng.float()).collect(),
            };
            cols.push(Column::Floats(v));
        } else {
            let v: Vec<i64> = match (feature, value_mode) {
                (_, 2) | (None, _) => (0..len).map(|_| r.u64() as i64).collect(),
                (Some(f), 1) => {
                    let mut v: Vec<i64> = (0..len).map(|_| valid_id(f, &mut rng)).collect();
                    for _ in 0..(r.u8() % 4) {
                        let k = r.u8();
                        let pos = r.u8() as usize;
                        if !v.is_empty() {
                            let n = v.len();
                            v[pos % n] = special_id(f, k);
                        }
                    }
                    v
                }
                (Some(f), _) => (0..len).map(|_| valid_id(f, &mut rng)).collect(),
            };
            if let Some(f) = feature {
                if !swap && !v.iter().all(|&id| id_in_range(f, id)) {
                    expected_ok = false;
                }
            }
            cols.push(Column::Ids(v));
        }
    }
    let inputs: Vec<Input> = cols.iter().map(Column::as_input).collect();

    let out_expected = batch * model.output_width();
    let out_len = match r.u8() {
        0..=7 if chaos => out_expected + 1,
        8..=15 if chaos => out_expected.saturating_sub(1),
        16..=19 if chaos => 0,
        _ => out_expected,
    };
    if out_len != out_expected {
        expected_ok = false;
    }
    let gate_expected = batch * model.gate_width();
    let gate_mode = r.u8() % 8;
    let gate_len = match gate_mode {
        0..=2 => None,
        3 if chaos => Some(gate_expected + 1),
        4 if chaos => Some(gate_expected.saturating_sub(1)),
        _ => Some(gate_expected),
    };
    if gate_len.is_some_and(|l| l != gate_expected) {
        expected_ok = false;
    }

    let mut out = vec![f32::from_bits(SENTINEL_A); out_len];
    let mut gates = gate_len.map(|n| vec![f32::from_bits(SENTINEL_A); n]);
    let res = session.run(&inputs, batch, &mut out, gates.as_deref_mut());
    match res {
        Err(e) => {
            assert!(
                !expected_ok,
                "valid call rejected (batch {batch}, max_batch {max_batch}): {e}"
            );
            // A caught panic is a bug, whatever the input: bad input is a validation error.
            assert!(
                !matches!(e, ple::Error::Panic { .. }),
                "scoring panicked (caught): {e}"
            );
            assert!(
                out.iter().all(|x| x.to_bits() == SENTINEL_A),
                "run returned Err ({e}) but wrote the output buffer"
            );
            if let Some(g) = &gates {
                assert!(
                    g.iter().all(|x| x.to_bits() == SENTINEL_A),
                    "run returned Err ({e}) but wrote the gates buffer"
                );
            }
        }
        Ok(()) => {
            assert!(
                expected_ok,
                "invalid call accepted (batch {batch}, max_batch {max_batch}, {n_cols} columns)"
            );
            // Every float written: rerun with another sentinel, the results must match bit for
            // bit (which also checks the session keeps no state between calls). Inputs holding
            // NaN could carry a payload equal to the sentinel, so the comparison needs two runs.
            let mut out2 = vec![f32::from_bits(SENTINEL_B); out_len];
            let mut gates2 = gate_len.map(|n| vec![f32::from_bits(SENTINEL_B); n]);
            session
                .run(&inputs, batch, &mut out2, gates2.as_deref_mut())
                .expect("second identical call failed");
            assert_same_bits(&out, &out2, "output");
            if let (Some(g), Some(g2)) = (&gates, &gates2) {
                assert_same_bits(g, g2, "gates");
            }
            // Ragged columns score what their padded form scores, bit for bit.
            if cols.iter().any(|c| matches!(c, Column::Ragged { .. })) {
                let padded: Vec<Input> = cols.iter().map(Column::as_padded_input).collect();
                session
                    .run(&padded, batch, &mut out2, gates2.as_deref_mut())
                    .expect("the padded form of a valid ragged call failed");
                assert_same_bits(&out, &out2, "output (ragged vs padded)");
                if let (Some(g), Some(g2)) = (&gates, &gates2) {
                    assert_same_bits(g, g2, "gates (ragged vs padded)");
                }
            }
        }
    }
}

/// Runs `inputs` into fresh buffers filled with `sentinel`.
fn run_filled(
    session: &mut Session,
    inputs: &[Input],
    batch: usize,
    out_len: usize,
    gates: bool,
    sentinel: u32,
) -> (ple::Result<Vec<f32>>, Vec<f32>) {
    let gate_len = batch * session.model().gate_width();
    let mut out = vec![f32::from_bits(sentinel); out_len];
    let mut g = vec![f32::from_bits(sentinel); if gates { gate_len } else { 0 }];
    let res = session.run(inputs, batch, &mut out, gates.then_some(&mut g[..]));
    (res.map(|()| out), g)
}

fn assert_same_bits(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        panic!(
            "{what}[{i}] differs between two identical calls ({:#010x} vs {:#010x}): \
             unwritten or nondeterministic",
            a[i].to_bits(),
            b[i].to_bits()
        );
    }
}
