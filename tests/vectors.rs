//! Embedding vectors from the caller (`Input::Floats` for a sparse or sequence input,
//! `Input::RaggedFloats`) score what the ids score, bit for bit: every fixture from the real
//! libraries, f32 and f16 tables, every SIMD level, one thread and a pool; and a file written
//! without its tables (flag bit 1, table NONE) scores the caller's vectors exactly as the file
//! with tables scores the ids, refusing ids with a clear error.

use ple_testkit as common;

use common::synth::{self, Rng, Shape};
use common::{fixture_dirs, load_inputs, Column};
use ple::{DType, Error, Input, InputKind, Model, Pool, Session, SimdLevel};

/// A column as the test hands it to the session.
enum Col {
    Ids(Vec<i64>),
    Floats(Vec<f32>),
    RaggedFloats(Vec<f32>, Vec<i64>),
}

impl Col {
    fn input(&self) -> Input<'_> {
        match self {
            Col::Ids(v) => Input::Ids(v),
            Col::Floats(v) => Input::Floats(v),
            Col::RaggedFloats(floats, offsets) => Input::RaggedFloats { floats, offsets },
        }
    }
}

fn row(model: &Model, input: usize, id: i64) -> Vec<f32> {
    let mut v = vec![0f32; model.inputs()[input].width];
    model.embedding_row(input, id, &mut v).unwrap();
    v
}

/// The vector form of padded id columns, looked up in `table_model` (the file with the tables):
/// sparse ids become their vectors; a sequence with a pad id becomes the ragged vectors of its
/// real ids (pad ids dropped wherever they are); one without, padded vectors of every position.
fn as_vectors(table_model: &Model, cols: &[Column]) -> Vec<Col> {
    table_model
        .inputs()
        .iter()
        .enumerate()
        .zip(cols)
        .map(|((i, f), c)| match (c, f.kind) {
            (Column::Floats(v), _) => Col::Floats(v.clone()),
            (Column::Ids(ids), InputKind::Sparse) => {
                Col::Floats(ids.iter().flat_map(|&id| row(table_model, i, id)).collect())
            }
            (Column::Ids(ids), _) => match f.pad_id {
                None => Col::Floats(ids.iter().flat_map(|&id| row(table_model, i, id)).collect()),
                Some(pad) => {
                    let (mut floats, mut offsets) = (Vec::new(), vec![0i64]);
                    for sample in ids.chunks(f.max_len) {
                        let real: Vec<i64> =
                            sample.iter().copied().filter(|&id| id != pad).collect();
                        for &id in &real {
                            floats.extend(row(table_model, i, id));
                        }
                        offsets.push(offsets.last().unwrap() + real.len() as i64);
                    }
                    Col::RaggedFloats(floats, offsets)
                }
            },
        })
        .collect()
}

fn ids_of(cols: &[Column]) -> Vec<Col> {
    cols.iter()
        .map(|c| match c {
            Column::Ids(v) => Col::Ids(v.clone()),
            Column::Floats(v) => Col::Floats(v.clone()),
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Scores `a` on `model_a` and `b` on `model_b`, on one thread and on a pool, and checks the
/// outputs and gate weights agree bit for bit.
fn assert_same(model_a: &Model, a: &[Col], model_b: &Model, b: &[Col], batch: usize, what: &str) {
    let pool = Pool::new(2).unwrap();
    let run = |model: &Model, cols: &[Col], pooled: bool| {
        let mut s = if pooled {
            let mut s = Session::with_pool(model, batch.max(1), &pool).unwrap();
            s.set_min_parallel_batch(1);
            s
        } else {
            Session::new(model, batch.max(1)).unwrap()
        };
        let inputs: Vec<Input> = cols.iter().map(Col::input).collect();
        let mut out = vec![0f32; batch * model.output_width()];
        let mut gates = vec![0f32; batch * model.gate_width()];
        s.run(&inputs, batch, &mut out, Some(&mut gates))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        (bits(&out), bits(&gates))
    };
    let want = run(model_a, a, false);
    for pooled in [false, true] {
        assert_eq!(run(model_b, b, pooled), want, "{what} (pool: {pooled})");
    }
}

#[test]
fn fixtures_score_vectors_as_ids() {
    for dir in fixture_dirs() {
        for file in ["model.ple", "model_f16.ple"] {
            if !dir.join(file).is_file() {
                continue;
            }
            for level in SimdLevel::available() {
                let model = common::open_at(dir.join(file), level);
                let (cols, batch) = load_inputs(&model, &dir);
                let what = format!("{dir:?} {file} {level:?}");
                assert_same(
                    &model,
                    &ids_of(&cols),
                    &model,
                    &as_vectors(&model, &cols),
                    batch,
                    &what,
                );
            }
        }
    }
}

fn synthetic(dtype: DType, tables: bool, big_pad_row: bool) -> Model {
    let shape = Shape {
        sequences: 3, // sum, mean, max; pad id 0
        max_len: 6,
        dtype,
        tables,
        ..Shape::default()
    };
    let mut w = synth::ple(&shape, 21);
    if big_pad_row {
        // E[pad] = 1e9 or 1e9 + 64: the max-pooled padding term E[pad] − 1e9 is then 0 or 64,
        // not −1e9 (and small enough not to saturate the sigmoid outputs, so a wrong term shows).
        let tables: Vec<u32> = w.meta.features.iter().map(|f| f.table).collect();
        for t in tables.into_iter().filter(|&t| t != ple::format::NONE) {
            let row0 = &mut w.tensor_bytes_mut(t)[..shape.dim * 4];
            for (j, v) in row0.chunks_exact_mut(4).enumerate() {
                let x = 1e9f32 + 64.0 * (j % 2) as f32;
                v.copy_from_slice(&x.to_le_bytes());
            }
        }
    }
    Model::from_bytes(&w.to_bytes()).unwrap()
}

/// Random padded ids for `model` (pad id 0 one time in four, trailing or inside rows).
fn random_ids(model: &Model, batch: usize, seed: u64) -> Vec<Column> {
    let mut rng = Rng(seed);
    let mut cols = synth::inputs(model, batch, seed);
    for (f, c) in model.inputs().iter().zip(&mut cols) {
        if let (InputKind::Sequence, Column::Ids(v)) = (f.kind, c) {
            for id in v.iter_mut() {
                if rng.below(4) == 0 {
                    *id = 0;
                }
            }
            // Sample 0 all padding: a max-pooled sample of padding alone is E[pad] − 1e9.
            let n = v.len().min(f.max_len);
            v[..n].fill(0);
        }
    }
    cols
}

#[test]
fn synthetic_models_score_vectors_as_ids() {
    for (dtype, big_pad_row) in [(DType::F32, false), (DType::F16, false), (DType::F32, true)] {
        {
            let model = synthetic(dtype, true, big_pad_row);
            for (batch, seed) in [(0, 1), (1, 2), (64, 3), (130, 4)] {
                let cols = random_ids(&model, batch, seed);
                let what = format!("{dtype:?} big pad row {big_pad_row} batch {batch}");
                assert_same(
                    &model,
                    &ids_of(&cols),
                    &model,
                    &as_vectors(&model, &cols),
                    batch,
                    &what,
                );
            }
        }
    }
}

#[test]
fn a_file_without_tables_scores_vectors_as_the_full_file_scores_ids() {
    for dtype in [DType::F32, DType::F16] {
        let full = synthetic(dtype, true, false);
        let bare = synthetic(dtype, false, false);
        assert!(bare
            .inputs()
            .iter()
            .all(|f| f.kind == InputKind::Dense || f.table.is_none()));
        assert!(bare.file_size() < full.file_size());
        for (batch, seed) in [(1, 5), (77, 6)] {
            let cols = random_ids(&full, batch, seed);
            let what = format!("{dtype:?} batch {batch}");
            assert_same(
                &full,
                &ids_of(&cols),
                &bare,
                &as_vectors(&full, &cols),
                batch,
                &what,
            );
            // Ids (padded or ragged) are refused, naming the input; nothing is written.
            let mut inputs: Vec<Col> = as_vectors(&full, &cols);
            let s0 = bare.input_index("s0").unwrap();
            inputs[s0] = Col::Ids(vec![1; batch]);
            let views: Vec<Input> = inputs.iter().map(Col::input).collect();
            let mut out = vec![-7f32; batch * bare.output_width()];
            let e = Session::new(&bare, batch)
                .unwrap()
                .run(&views, batch, &mut out, None)
                .unwrap_err();
            assert!(matches!(e, Error::WrongInputKind { .. }), "{e}");
            assert_eq!(
                e.to_string(),
                "input 's0' expects embedding vectors (floats): this file has no table for it"
            );
            assert!(out.iter().all(|&v| v == -7.0));
            let mut v = vec![0f32; bare.inputs()[s0].width];
            assert!(bare.embedding_row(s0, 1, &mut v).is_err());
        }
    }
}

/// Malformed vector columns: each an error naming the input (and sample), outputs untouched.
#[test]
fn malformed_vector_columns_are_errors() {
    let model = synthetic(DType::F32, true, false);
    let batch = 2;
    let cols = random_ids(&model, batch, 9);
    let good = as_vectors(&model, &cols);
    let dim = model.inputs()[0].width.max(model.inputs()[1].width);
    let q0 = model.input_index("q0").unwrap();
    let s0 = model.input_index("s0").unwrap();
    let w = model.inputs()[q0].width;
    let cases: Vec<(usize, Col, &str)> = vec![
        (
            s0,
            Col::Floats(vec![0.5; batch * w + 1]),
            "input 's0' has length",
        ),
        (
            q0,
            Col::Floats(vec![0.5; batch * 6 * w]),
            "input 'q0' expects ids, or its vectors ragged",
        ),
        (
            q0,
            Col::RaggedFloats(vec![0.5; 3 * w + 1], vec![0, 1, 3]),
            "input 'q0', sample 1: the last offset is 3 vectors but the column holds",
        ),
        (
            q0,
            Col::RaggedFloats(vec![0.5; 7 * w], vec![0, 0, 7]),
            "input 'q0', sample 1: 7 ids, more than the input's max_len of 6",
        ),
        (
            q0,
            Col::RaggedFloats(vec![0.5; 3 * w], vec![0, 2, 1, 3]),
            "the offsets of input 'q0'",
        ),
        (
            q0,
            Col::RaggedFloats(vec![0.5; 3 * w], vec![1, 2, 3]),
            "input 'q0', sample 0: offsets[0] is 1",
        ),
        (
            s0,
            Col::RaggedFloats(vec![0.5; 2 * w], vec![0, 1, 2]),
            "input 's0' expects one id or vector per sample",
        ),
    ];
    assert!(dim > 0);
    for (i, col, needle) in cases {
        let mut inputs: Vec<Input> = good.iter().map(Col::input).collect();
        inputs[i] = col.input();
        let mut out = vec![-7f32; batch * model.output_width()];
        let e = Session::new(&model, batch)
            .unwrap()
            .run(&inputs, batch, &mut out, None)
            .unwrap_err();
        assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
        assert!(out.iter().all(|&v| v == -7.0), "{e}: outputs written");
    }
}

/// A sparse feature with table NONE must carry flag bit 1 (so that a table index lost to
/// corruption is not read as "vectors from the caller"), and flag bit 1 needs table NONE.
#[test]
fn the_no_table_flag_and_a_none_table_go_together() {
    let shape = Shape {
        tables: false,
        ..Shape::default()
    };
    let (good, at) = synth::ple(&shape, 2).to_bytes_with_offsets();
    assert!(Model::from_bytes(&good).is_ok());
    let mut b = good.clone();
    b[at.features[1] + 7] = 0; // s0: table NONE, flag cleared
    ple_testkit::writer::fix_checksums(&mut b);
    let e = Model::from_bytes(&b).unwrap_err().to_string();
    assert!(e.contains("feature 1 's0': flag bit 1"), "{e}");
}

/// A file without tables passes the fuzz harness's load checks (it derives valid vector inputs
/// for such inputs and must score them).
#[test]
fn a_file_without_tables_passes_the_load_checks() {
    let shape = Shape {
        tables: false,
        sequences: 3,
        ..Shape::default()
    };
    let bytes = synth::ple(&shape, 4).to_bytes();
    ple_testkit::fuzz_checks::check_load(&bytes);
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("no_tables.ple");
    std::fs::write(path, bytes).unwrap();
}
