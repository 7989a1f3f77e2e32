//! Ragged sequence columns (`Input::RaggedIds`): scores equal the padded form's bit for bit (every
//! fixture from the real libraries, synthetic models with sum, mean and max pooling, f32 and f16
//! tables, every SIMD level, one thread and a pool), and every kind of malformed column is an
//! error naming the input and the sample that leaves the outputs untouched.

use ple_testkit as common;

use common::synth::{self, Rng, Shape};
use common::{fixture_dirs, load_inputs, Column};
use ple::format::codes::Mask;
use ple::{DType, Error, Input, InputKind, Model, Pool, RaggedProblem, Session, SimdLevel};

/// One input's column in both forms: padded (as the model takes it) and, for a sequence, ragged.
struct Both {
    padded: Column,
    ragged: Option<(Vec<i64>, Vec<i64>)>,
}

impl Both {
    fn ragged_input(&self) -> Input<'_> {
        match &self.ragged {
            Some((ids, offsets)) => Input::RaggedIds { ids, offsets },
            None => self.padded.as_input(),
        }
    }
}

/// Ragged form of a padded sequence column: each row without its trailing pad ids (a row keeps
/// pad ids that come before a real id). Inputs without a pad id keep their whole rows.
fn strip_padding(model: &Model, cols: Vec<Column>) -> Vec<Both> {
    model
        .inputs()
        .iter()
        .zip(cols)
        .map(|(f, padded)| {
            let ragged = match (&padded, f.kind) {
                (Column::Ids(v), InputKind::Sequence) => {
                    let (mut ids, mut offsets) = (Vec::new(), vec![0i64]);
                    for row in v.chunks(f.max_len) {
                        let keep = match f.pad_id {
                            Some(pad) => row.iter().rposition(|&id| id != pad).map_or(0, |p| p + 1),
                            None => row.len(),
                        };
                        ids.extend_from_slice(&row[..keep]);
                        offsets.push(ids.len() as i64);
                    }
                    Some((ids, offsets))
                }
                _ => None,
            };
            Both { padded, ragged }
        })
        .collect()
}

/// Random ragged sequences (lengths 0..=max_len, pad ids also inside rows) and their padded form.
fn random_inputs(model: &Model, batch: usize, seed: u64) -> Vec<Both> {
    let mut rng = Rng(seed ^ 0x5eed);
    let cols = synth::inputs(model, batch, seed);
    model
        .inputs()
        .iter()
        .zip(cols)
        .map(|(f, col)| {
            if f.kind != InputKind::Sequence {
                return Both {
                    padded: col,
                    ragged: None,
                };
            }
            let (mut ids, mut offsets, mut padded) = (Vec::new(), vec![0i64], Vec::new());
            for _ in 0..batch {
                let len = match f.pad_id {
                    Some(_) => rng.below(f.max_len as u64 + 1) as usize,
                    None => f.max_len,
                };
                for _ in 0..len {
                    // One id in four is the pad id (0): pooled as padding wherever it is.
                    let id = match rng.below(4) {
                        0 => 0,
                        _ => rng.below(f.vocab() as u64) as i64,
                    };
                    ids.push(id);
                    padded.push(id);
                }
                padded.extend(std::iter::repeat_n(f.pad_id.unwrap_or(0), f.max_len - len));
                offsets.push(ids.len() as i64);
            }
            Both {
                padded: Column::Ids(padded),
                ragged: Some((ids, offsets)),
            }
        })
        .collect()
}

fn score(session: &mut Session, inputs: &[Input], batch: usize) -> (Vec<f32>, Vec<f32>) {
    let model = session.model().clone();
    let mut out = vec![0f32; batch * model.output_width()];
    let mut gates = vec![0f32; batch * model.gate_width()];
    session
        .run(inputs, batch, &mut out, Some(&mut gates))
        .expect("scoring succeeds");
    (out, gates)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Scores both forms on one thread and on a pool, and checks they agree bit for bit.
fn assert_forms_agree(model: &Model, both: &[Both], batch: usize, what: &str) {
    let padded: Vec<Input> = both.iter().map(|b| b.padded.as_input()).collect();
    let ragged: Vec<Input> = both.iter().map(Both::ragged_input).collect();
    let pool = Pool::new(2).unwrap();
    let mut single = Session::new(model, batch.max(1)).unwrap();
    let mut pooled = Session::with_pool(model, batch.max(1), &pool).unwrap();
    pooled.set_min_parallel_batch(1);
    let (out, gates) = score(&mut single, &padded, batch);
    for session in [&mut single, &mut pooled] {
        let (o, g) = score(session, &ragged, batch);
        assert_eq!(bits(&o), bits(&out), "{what}: outputs differ");
        assert_eq!(bits(&g), bits(&gates), "{what}: gate weights differ");
    }
}

#[test]
fn fixtures_score_the_same_ragged_and_padded() {
    let mut sequences = 0;
    for dir in fixture_dirs() {
        for level in SimdLevel::available() {
            let model = common::open_at(dir.join("model.ple"), level);
            let (cols, batch) = load_inputs(&model, &dir);
            let both = strip_padding(&model, cols);
            sequences += both.iter().filter(|b| b.ragged.is_some()).count();
            assert_forms_agree(&model, &both, batch, &format!("{dir:?} {level:?}"));
        }
    }
    assert!(sequences > 0, "no fixture has a sequence input");
}

fn synthetic(dtype: DType, mask: Mask, max_len: usize) -> Model {
    let shape = Shape {
        sequences: 3, // sum, mean, max
        max_len,
        dtype,
        ..Shape::default()
    };
    let mut w = synth::ple(&shape, 11);
    for f in &mut w.meta.features {
        if f.kind == InputKind::Sequence {
            f.mask = mask;
        }
    }
    Model::from_bytes(&w.to_bytes()).unwrap()
}

#[test]
fn synthetic_models_score_the_same_ragged_and_padded() {
    for dtype in [DType::F32, DType::F16] {
        for mask in [Mask::PadId, Mask::None] {
            for level in SimdLevel::available() {
                let shape = Shape {
                    sequences: 3,
                    max_len: 7,
                    dtype,
                    ..Shape::default()
                };
                let mut w = synth::ple(&shape, 11);
                for f in &mut w.meta.features {
                    if f.kind == InputKind::Sequence {
                        f.mask = mask;
                    }
                }
                let opts = ple::LoadOptions {
                    simd: Some(level),
                    ..Default::default()
                };
                let model = Model::from_bytes_with(&w.to_bytes(), &opts).unwrap();
                for (batch, seed) in [(0, 1), (1, 2), (63, 3), (64, 4), (65, 5), (300, 6)] {
                    let both = random_inputs(&model, batch, seed);
                    let what = format!("{dtype:?} {mask:?} {level:?} batch {batch}");
                    assert_forms_agree(&model, &both, batch, &what);
                }
            }
        }
    }
}

/// A max-pooled sample of only padding pools to `E[pad] − 1e9` in the padded form: the ragged
/// form's empty sample must give the same, even where that is not −1e9 (|E[pad]| ≥ 32).
#[test]
fn an_empty_max_pooled_sample_is_the_padded_form_exactly() {
    let shape = Shape {
        sequences: 3,
        max_len: 4,
        ..Shape::default()
    };
    let mut w = synth::ple(&shape, 5);
    // Scale the pad row of every table far from 0, so that E[pad] − 1e9 is not −1e9 in f32.
    let bytes = {
        let tables: Vec<u32> = w.meta.features.iter().map(|f| f.table).collect();
        for t in tables.into_iter().filter(|&t| t != ple::format::NONE) {
            let row0 = &mut w.tensor_bytes_mut(t)[..shape.dim * 4];
            for v in row0.chunks_exact_mut(4) {
                let x = f32::from_le_bytes(v.try_into().unwrap()) * 1000.0 + 100.0;
                v.copy_from_slice(&x.to_le_bytes());
            }
        }
        w.to_bytes()
    };
    let model = Model::from_bytes(&bytes).unwrap();
    let q2 = model.input_index("q2").unwrap();
    assert_eq!(model.inputs()[q2].pooling, Some(ple::Pooling::Max));
    let batch = 3;
    let mut both = random_inputs(&model, batch, 9);
    for b in &mut both {
        if let Some((ids, offsets)) = &mut b.ragged {
            // Sample 1 empty, the others as drawn.
            let (a, e) = (offsets[1] as usize, offsets[2] as usize);
            ids.drain(a..e);
            for o in &mut offsets[2..] {
                *o -= (e - a) as i64;
            }
            if let Column::Ids(p) = &mut b.padded {
                p[4..8].fill(0);
            }
        }
    }
    assert_forms_agree(&model, &both, batch, "empty max-pooled sample");
}

/// The error of scoring `inputs`, after checking that the outputs were left alone.
fn failure(model: &Model, inputs: &[Input], batch: usize) -> Error {
    let mut session = Session::new(model, 8).unwrap();
    let mut out = vec![-7f32; batch * model.output_width()];
    let mut gates = vec![-7f32; batch * model.gate_width()];
    let e = session
        .run(inputs, batch, &mut out, Some(&mut gates))
        .expect_err("malformed input must fail");
    assert!(
        out.iter().chain(&gates).all(|&v| v == -7.0),
        "{e}: outputs written"
    );
    e
}

#[test]
fn malformed_ragged_columns_are_errors_naming_input_and_sample() {
    let model = synthetic(DType::F32, Mask::PadId, 4);
    let batch = 3;
    // Leaked: every case borrows these for the rest of the test.
    let both: &'static [Both] = Box::leak(random_inputs(&model, batch, 3).into_boxed_slice());
    let q = model.input_index("q1").unwrap();
    let good: Vec<i64> = vec![1, 2, 3, 4, 5, 6];
    let with = |ids: &'static [i64], offsets: &'static [i64]| -> Vec<Input<'static>> {
        let mut inputs: Vec<Input> = both.iter().map(|b| b.padded.as_input()).collect();
        inputs[q] = Input::RaggedIds { ids, offsets };
        inputs
    };
    let leak = |v: Vec<i64>| -> &'static [i64] { Box::leak(v.into_boxed_slice()) };
    let ragged = |problem: RaggedProblem, sample: usize, e: Error| match e {
        Error::Ragged {
            feature,
            sample: s,
            problem: p,
        } => {
            assert_eq!(&*feature, "q1");
            assert_eq!((s, p), (sample, problem));
        }
        e => panic!("expected {problem:?} at sample {sample}, got {e}"),
    };
    let ids = leak(good.clone());
    // offsets[0] != 0.
    let e = failure(&model, &with(ids, leak(vec![1, 2, 4, 6])), batch);
    assert_eq!(
        e.to_string(),
        "input 'q1', sample 0: offsets[0] is 1, it must be 0"
    );
    ragged(RaggedProblem::FirstOffset { first: 1 }, 0, e);
    // Decreasing between samples 1 and 2 (also a negative offset).
    let e = failure(&model, &with(ids, leak(vec![0, 4, 2, 6])), batch);
    ragged(RaggedProblem::Decreasing { start: 4, end: 2 }, 1, e);
    let e = failure(&model, &with(ids, leak(vec![0, -1, 2, 6])), batch);
    ragged(RaggedProblem::Decreasing { start: 0, end: -1 }, 0, e);
    // The last offset is not the number of ids (short and long).
    let e = failure(&model, &with(ids, leak(vec![0, 2, 4, 5])), batch);
    ragged(RaggedProblem::LastOffset { last: 5, values: 6 }, 2, e);
    let e = failure(&model, &with(ids, leak(vec![0, 2, 4, 9])), batch);
    ragged(RaggedProblem::LastOffset { last: 9, values: 6 }, 2, e);
    // A sample longer than max_len (4).
    let e = failure(&model, &with(ids, leak(vec![0, 0, 5, 6])), batch);
    assert!(
        e.to_string()
            .starts_with("input 'q1', sample 1: 5 ids, more than the input's max_len of 4"),
        "{e}"
    );
    ragged(RaggedProblem::TooLong { len: 5, max_len: 4 }, 1, e);
    // Offsets of the wrong length (batch + 1 expected).
    let e = failure(&model, &with(ids, leak(vec![0, 2, 6])), batch);
    assert!(
        matches!(
            &e,
            Error::WrongLength {
                expected: 4,
                got: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("offsets of input 'q1'"), "{e}");
    // An id out of range names its sample and position.
    let e = failure(
        &model,
        &with(leak(vec![1, 2, 3, 99, 5, 6]), leak(vec![0, 2, 4, 6])),
        batch,
    );
    assert!(
        matches!(
            &e,
            Error::IdOutOfRange {
                sample: 1,
                position: 1,
                id: 99,
                ..
            }
        ),
        "{e}"
    );
    // A ragged column for a sparse input.
    let mut inputs = with(ids, leak(vec![0, 2, 4, 6]));
    let s0 = model.input_index("s0").unwrap();
    inputs[s0] = Input::RaggedIds {
        ids: leak(vec![1, 2, 3]),
        offsets: leak(vec![0, 1, 2, 3]),
    };
    assert!(matches!(
        failure(&model, &inputs, batch),
        Error::WrongInputKind { .. }
    ));
    // And the well-formed column scores.
    let inputs = with(ids, leak(vec![0, 2, 4, 6]));
    let mut out = vec![0f32; batch * model.output_width()];
    Session::new(&model, batch)
        .unwrap()
        .run(&inputs, batch, &mut out, None)
        .unwrap();
}

#[test]
fn an_input_without_pad_id_needs_full_ragged_samples() {
    let model = synthetic(DType::F32, Mask::None, 3);
    let batch = 2;
    let both = random_inputs(&model, batch, 4);
    let q = model.input_index("q0").unwrap();
    let mut inputs: Vec<Input> = both.iter().map(Both::ragged_input).collect();
    let ids = [1i64, 2, 3, 4, 5];
    let offsets = [0i64, 3, 5];
    inputs[q] = Input::RaggedIds {
        ids: &ids,
        offsets: &offsets,
    };
    let e = failure(&model, &inputs, batch);
    assert!(
        matches!(
            e,
            Error::Ragged {
                sample: 1,
                problem: RaggedProblem::NotFull { len: 2, max_len: 3 },
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("no pad id"), "{e}");
}

/// A short ragged sample stands for the padded form padded with the pad id, which is looked up
/// too: a pad id outside the table is the padded form's error, at the first padding position.
#[test]
fn padding_outside_the_table_is_an_error_at_the_first_padding_position() {
    let shape = Shape {
        sequences: 1,
        max_len: 4,
        vocab: 20,
        ..Shape::default()
    };
    let mut w = synth::ple(&shape, 11);
    for f in &mut w.meta.features {
        if f.kind == InputKind::Sequence {
            f.pad_id = 20;
        }
    }
    let model = Model::from_bytes(&w.to_bytes()).unwrap();
    let batch = 2;
    let both = random_inputs(&model, batch, 4);
    let q = model.input_index("q0").unwrap();
    let mut inputs: Vec<Input> = both.iter().map(|b| b.padded.as_input()).collect();
    let (ids, offsets) = ([1i64, 2, 3, 4, 5, 6], [0i64, 4, 6]);
    inputs[q] = Input::RaggedIds {
        ids: &ids,
        offsets: &offsets,
    };
    let e = failure(&model, &inputs, batch);
    assert!(
        matches!(
            e,
            Error::IdOutOfRange {
                sample: 1,
                position: 2,
                id: 20,
                ..
            }
        ),
        "{e}"
    );
}
