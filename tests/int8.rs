//! int8 files end to end: a synthetic PLE written with int8 dense layers (the test kit quantizes
//! the same f32 weights) scores close to its f32 twin at every SIMD level, independently of the
//! batch, and every corruption of the new fields is a clear error (FORMAT.md §3.2, §4).

use ple_testkit as common;

use common::synth::{self, Shape};
use common::Column;
use ple::format::{codes::Layout, DType};
use ple::kernels::int8::{self, PANEL_HEADER};
use ple::{Input, LoadOptions, Model, Session, SimdLevel};
use ple_testkit::writer::{fix_checksums, Writer};

fn shape(dtype: DType) -> Shape {
    Shape {
        tasks: 2,
        levels: 2,
        specific: 1,
        shared: 2,
        expert_dims: vec![64, 32],
        tower_dims: vec![32, 8],
        dense_width: 40,
        dtype,
        ..Shape::default()
    }
}

fn open(bytes: &[u8], level: SimdLevel) -> Model {
    let opts = LoadOptions {
        simd: Some(level),
        ..Default::default()
    };
    Model::from_bytes_with(bytes, &opts).unwrap()
}

fn score(model: &Model, cols: &[Column], batch: usize) -> Vec<f32> {
    let inputs: Vec<Input> = cols.iter().map(Column::as_input).collect();
    let mut s = Session::new(model, batch).unwrap();
    let mut out = vec![f32::NAN; batch * model.output_width()];
    s.run(&inputs, batch, &mut out, None).unwrap();
    out
}

/// Values per sample of a column holding `batch` samples.
fn per(c: &Column, batch: usize) -> usize {
    match c {
        Column::Ids(v) => v.len() / batch,
        Column::Floats(v) => v.len() / batch,
    }
}

#[test]
fn int8_file_scores_close_to_its_f32_twin_at_every_level() {
    let f32_file = synth::ple(&shape(DType::F32), 7).to_bytes();
    let i8_file = synth::ple(&shape(DType::I8), 7).to_bytes();
    assert!(i8_file.len() < f32_file.len());
    let batch = 150; // three tiles, the last partial
    let mut int8_by_level = Vec::new();
    for level in SimdLevel::available() {
        let f = open(&f32_file, level);
        let q = open(&i8_file, level);
        assert_eq!(q.format_version(), (1, 1));
        assert_eq!(f.format_version(), (1, 0), "files without int8 stay 1.0");
        // Wide layers int8, narrow ones (gates, the 8-wide tower layer) f32: mixed.
        assert_eq!(q.weight_dtype(), None);
        let dtypes: Vec<DType> = q
            .graph()
            .mlps
            .iter()
            .flat_map(|m| m.layers.iter().map(|l| l.weight.dtype))
            .collect();
        assert!(dtypes.contains(&DType::I8) && dtypes.contains(&DType::F32));
        let cols = synth::inputs(&q, batch, 3);
        let (want, got) = (score(&f, &cols, batch), score(&q, &cols, batch));
        let (mut worst, mut sum) = (0f64, 0f64);
        for (a, b) in want.iter().zip(&got) {
            let d = (*a as f64 - *b as f64).abs();
            worst = worst.max(d);
            sum += d;
        }
        let mean = sum / want.len() as f64;
        // The synthetic scores vary little between samples: judge the error against how much
        // they vary, so that a broken int8 layer (noise of the scores' size) cannot pass.
        let spread = (want.iter().fold(f32::MIN, |m, &x| m.max(x))
            - want.iter().fold(f32::MAX, |m, &x| m.min(x))) as f64;
        eprintln!(
            "{level:?}: int8 vs f32 max |Δ| {worst:.2e}, mean {mean:.2e}; spread {spread:.2e}"
        );
        assert!(
            worst < 0.05 * spread && mean < 0.01 * spread,
            "{level:?}: max {worst}, mean {mean}, spread {spread}"
        );
        assert!(
            worst > 0.0,
            "int8 gave exactly the f32 scores: was it used?"
        );
        // Batch invariance: each sample scored alone gives its batch result bit for bit.
        let width = q.output_width();
        for i in [0, 63, 64, 149] {
            let one: Vec<Column> = cols
                .iter()
                .map(|c| c.rows(per(c, batch), i, i + 1))
                .collect();
            let alone = score(&q, &one, 1);
            assert!(
                alone
                    .iter()
                    .zip(&got[i * width..(i + 1) * width])
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{level:?}: sample {i} differs when scored alone"
            );
        }
        int8_by_level.push((level, got));
    }
    // Levels differ only through the f32 layers' rounding (FMA or not), which can move an input
    // across a quantization step: far below the quantization error itself.
    let (l0, first) = &int8_by_level[0];
    for (level, got) in &int8_by_level[1..] {
        let worst = first
            .iter()
            .zip(got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 2e-3, "{level:?} vs {l0:?}: {worst}");
    }
}

/// The int8 file, and the byte offset of the first int8 tensor's data with its k and n.
fn int8_file() -> (Writer, Vec<u8>, usize, usize, usize) {
    let w = synth::ple(&shape(DType::I8), 5);
    let bytes = w.to_bytes();
    let data_offset = u64::from_le_bytes(bytes[40..48].try_into().unwrap()) as usize;
    let t = w
        .meta
        .tensors
        .iter()
        .find(|t| t.dtype == DType::I8)
        .expect("an i8 tensor");
    let at = data_offset + t.offset as usize;
    (w.clone(), bytes, at, t.rows as usize, t.cols as usize)
}

fn expect_error(bytes: &[u8], needle: &str) {
    match Model::from_bytes(bytes) {
        Ok(_) => panic!("loaded a file that should fail with '{needle}'"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "expected '{needle}', got: {msg}");
            eprintln!("{needle}: {msg}");
        }
    }
}

#[test]
fn corrupt_int8_fields_are_clear_errors() {
    let (w, good, at, k, n) = int8_file();
    Model::from_bytes(&good).unwrap();
    let put = |b: &mut Vec<u8>, off: usize, v: [u8; 4]| b[off..off + 4].copy_from_slice(&v);
    let code = move |r: usize, c: usize| at + PANEL_HEADER + (r / 4) * 64 + c * 4 + r % 4;
    type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "scale 0 is not finite and positive",
            Box::new(move |b| put(b, at + 8, 0f32.to_le_bytes())),
        ),
        (
            "is not finite and positive",
            Box::new(move |b| put(b, at + 8, f32::NAN.to_le_bytes())),
        ),
        (
            "is not finite and positive",
            Box::new(move |b| put(b, at, f32::INFINITY.to_le_bytes())),
        ),
        (
            "is not finite and positive",
            Box::new(move |b| put(b, at + 4, (-1f32).to_le_bytes())),
        ),
        (
            "column sum",
            Box::new(move |b| {
                let s = i32::from_le_bytes(b[at + 64..at + 68].try_into().unwrap());
                put(b, at + 64, (s + 1).to_le_bytes())
            }),
        ),
        ("code -128", Box::new(move |b| b[code(1, 2)] = 0x80)),
    ];
    for (needle, mutate) in cases {
        let mut b = good.clone();
        mutate(&mut b);
        fix_checksums(&mut b);
        expect_error(&b, needle);
    }
    // Metadata: i8 in a 1.0 file, i8 with the f32 layout and f32 with the int8 layout, a size
    // that is not the panels', and an int8 layer over the k limit.
    let mut b = good.clone();
    b[10..12].copy_from_slice(&0u16.to_le_bytes());
    fix_checksums(&mut b);
    expect_error(&b, "i8 needs format 1.1");
    let idx = w
        .meta
        .tensors
        .iter()
        .position(|t| t.dtype == DType::I8)
        .unwrap();
    let mut bad = w.clone();
    bad.meta.tensors[idx].layout = Layout::Panel16;
    expect_error(&bad.to_bytes(), "i8 goes with panel16x4");
    let mut bad = w.clone();
    bad.meta.tensors[idx].size -= 64;
    expect_error(&bad.to_bytes(), &format!("{k}x{n} i8 panel16x4 needs"));
}

#[test]
fn random_mutations_of_int8_weights_never_panic() {
    // Byte rewrites inside the int8 tensors (checksums fixed): each must be an error or a model
    // that scores without panicking.
    let (_, good, at, k, n) = int8_file();
    let len = int8::weight_bytes(k, n);
    let mut rng = synth::Rng(17);
    let (mut loaded, mut rejected) = (0, 0);
    for case in 0..2000u64 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(3) {
            let off = at + rng.below(len as u64) as usize;
            b[off] = [0u8, 0x80, 0x7f, 0xff, 1][rng.below(5) as usize];
        }
        fix_checksums(&mut b);
        let result = std::panic::catch_unwind(|| match Model::from_bytes(&b) {
            Ok(model) => {
                let cols = synth::inputs(&model, 3, case);
                let _ = score(&model, &cols, 3);
                true
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                false
            }
        });
        match result {
            Ok(true) => loaded += 1,
            Ok(false) => rejected += 1,
            Err(_) => panic!("case {case} panicked"),
        }
    }
    eprintln!("{loaded} loaded, {rejected} rejected");
    assert!(
        rejected > 1000,
        "most rewrites break a scale, a code sum or a code"
    );
}

#[test]
fn c_api_reports_each_layers_precision() {
    use ple::ffi::*;
    let bytes = synth::ple(&shape(DType::I8), 7).to_bytes();
    let model = Model::from_bytes(&bytes).unwrap();
    let want: Vec<(DType, usize, usize)> = model
        .graph()
        .mlps
        .iter()
        .flat_map(|m| m.layers.iter().map(|l| (l.weight.dtype, l.k, l.n)))
        .collect();
    let mut handle: *const ple_model = std::ptr::null();
    // SAFETY: `bytes` is readable for its length; `handle` is a valid out pointer; every handle
    // is freed once below.
    unsafe {
        let st = ple_model_open_memory(bytes.as_ptr().cast(), bytes.len(), 0, &mut handle);
        assert!(matches!(st, ple_status::Ok));
        assert!(matches!(ple_model_dtype(handle), ple_dtype::Mixed));
        assert_eq!(ple_model_layer_count(handle), want.len());
        for (i, &(dtype, k, n)) in want.iter().enumerate() {
            let got = ple_model_layer_dtype(handle, i);
            let expected = match dtype {
                DType::F32 => ple_dtype::F32,
                DType::F16 => ple_dtype::F16,
                DType::I8 => ple_dtype::I8,
            };
            assert_eq!(got as u32, expected as u32, "layer {i}");
            assert_eq!(ple_model_layer_inputs(handle, i), k);
            assert_eq!(ple_model_layer_outputs(handle, i), n);
        }
        assert!(matches!(
            ple_model_layer_dtype(handle, want.len()),
            ple_dtype::None
        ));
        let level = std::ffi::CStr::from_ptr(ple_model_int8_level(handle));
        assert_eq!(level.to_str().unwrap(), model.int8_level().name());
        assert!(matches!(
            ple_model_layer_dtype(std::ptr::null(), 0),
            ple_dtype::None
        ));
        assert!(ple_model_int8_level(std::ptr::null()).is_null());
        ple_model_free(handle);
    }
}

/// The committed fuzz seed with input scales (format 1.2): a DeepCTR-Torch PLE exported by the
/// Python writer's default, its three x0-reading experts int8 with one shared r.
const X0_SCALED: &[u8] = include_bytes!("../fuzz/corpus/load/deepctr_ple_int8_x0.ple");

#[test]
fn input_scaled_file_scores_alike_at_every_level() {
    let (h, meta) = ple::format::parse(X0_SCALED).unwrap();
    assert_eq!((h.minor, meta.input_scales.len()), (2, 3));
    let batch = 70;
    let mut first: Option<Vec<f32>> = None;
    for level in SimdLevel::available() {
        let model = open(X0_SCALED, level);
        let got = score(&model, &synth::inputs(&model, batch, 5), batch);
        assert!(got.iter().all(|x| x.is_finite()));
        // The int8 layers are bit-identical across levels; the f32 layers after them round
        // differently (FMA or not), which can move a value across a quantization step.
        match &first {
            None => first = Some(got),
            Some(want) => {
                let worst = (want.iter().zip(&got))
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 2e-3, "{level:?} vs scalar: {worst}");
            }
        }
    }
}

#[test]
fn random_mutations_of_input_scales_never_panic() {
    // Byte rewrites in the input-scales section and in the r tensor (checksums fixed): each must
    // be an error or a model that scores without panicking; bad values must be refused.
    let (h, meta) = ple::format::parse(X0_SCALED).unwrap();
    let r = &meta.tensors[meta.input_scales[0].tensor as usize];
    let r_at = (h.data_offset + r.offset) as usize;
    let r_len = r.size as usize;
    let section_len = 4 + 12 * meta.input_scales.len();
    let section_at = 64 + h.meta_size as usize - section_len;
    let mut rng = synth::Rng(23);
    let (mut loaded, mut rejected) = (0, 0);
    for case in 0..1000u64 {
        let mut b = X0_SCALED.to_vec();
        for _ in 0..1 + rng.below(2) {
            let off = if rng.below(2) == 0 {
                section_at + rng.below(section_len as u64) as usize
            } else {
                r_at + rng.below(r_len as u64) as usize
            };
            b[off] = [0u8, 0x80, 0x7f, 0xff, 1, 2][rng.below(6) as usize];
        }
        fix_checksums(&mut b);
        let result = std::panic::catch_unwind(|| match Model::from_bytes(&b) {
            Ok(model) => {
                let cols = synth::inputs(&model, 3, case);
                let _ = score(&model, &cols, 3);
                true
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                false
            }
        });
        match result {
            Ok(true) => loaded += 1,
            Ok(false) => rejected += 1,
            Err(_) => panic!("case {case} panicked"),
        }
    }
    eprintln!("{loaded} loaded, {rejected} rejected");
    assert!(
        rejected > 300 && loaded > 50,
        "{loaded} loaded, {rejected} rejected"
    );
}
