//! Golden tests: every fixture (a real torch-rechub / DeepCTR-Torch model, exported) scored by the
//! runtime and compared with (a) the training library's own eval-mode output and (b) an
//! independent float64 numpy forward pass — at every SIMD level this CPU has, f32 and f16.

use ple_testkit as common;

use common::*;
use ple::{LoadOptions, Model, SimdLevel};

/// The bound: max |ours − ref| / max(1, |ref|).
const TOL: f64 = 1e-5;

#[test]
fn fixtures_exist() {
    // The golden tests below must not pass by finding nothing.
    let dirs = fixture_dirs();
    assert!(
        dirs.len() >= 10,
        "expected the fixture set in tests/fixtures, found {dirs:?}"
    );
}

#[test]
fn f32_matches_reference_and_library_at_every_level() {
    let mut report = Vec::new();
    for dir in fixture_dirs() {
        let name = name(&dir);
        let expected_ref = read_f64(&dir.join("expected_ref.npy"));
        let expected_lib = read_f64(&dir.join("expected_torch.npy"));
        let gates_ref = read_f64(&dir.join("gates_ref.npy"));
        for level in SimdLevel::available() {
            let model = open_at(dir.join("model.ple"), level);
            let (cols, batch) = load_inputs(&model, &dir);
            let (out, gates) = score(&model, &cols, batch);
            let e_ref = max_rel_err(&out, &expected_ref);
            let e_lib = max_rel_err(&out, &expected_lib);
            let e_gate = max_rel_err(&gates, &gates_ref);
            report.push(format!(
                "{name:28} {:7} ref {e_ref:.2e}  library {e_lib:.2e}  gates {e_gate:.2e}",
                level.name()
            ));
            assert!(
                e_ref <= TOL && e_lib <= TOL && e_gate <= TOL,
                "{name} {level:?}: error vs the float64 reference {e_ref:e}, vs the training \
                 library {e_lib:e}, of the gate weights {e_gate:e} (at most {TOL:e} each)"
            );
        }
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn f16_storage_is_the_only_rounding() {
    // An f16 file must score exactly like an f32 file holding the same weights rounded to f16,
    // at the same SIMD level: the weights are widened exactly and accumulation is f32 in both.
    let mut report = Vec::new();
    for dir in fixture_dirs() {
        let name = name(&dir);
        let expected_lib = read_f64(&dir.join("expected_torch.npy"));
        for level in SimdLevel::available() {
            let rounded = open_at(dir.join("model_f16r.ple"), level);
            let (cols, batch) = load_inputs(&rounded, &dir);
            let (want, want_gates) = score(&rounded, &cols, batch);
            let model = open_at(dir.join("model_f16.ple"), level);
            assert_eq!(model.weight_dtype(), Some(ple::DType::F16), "{name}");
            let (out, gates) = score(&model, &cols, batch);
            let want64: Vec<f64> = want.iter().map(|&x| x as f64).collect();
            let e = max_rel_err(&out, &want64);
            let e_lib = max_rel_err(&out, &expected_lib);
            report.push(format!(
                "{name:28} {:7} f16 vs rounded-f32 {e:.2e}  (vs library f32 {e_lib:.2e})",
                level.name()
            ));
            assert!(
                e <= TOL,
                "{name} {level:?}: f16 differs from rounded f32 by {e:e}"
            );
            let same =
                |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same(&out, &want) && same(&gates, &want_gates),
                "{name} {level:?}: not bit-identical"
            );
        }
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn scores_do_not_depend_on_batching() {
    // Scoring the batch in uneven pieces gives bit-identical results to scoring it whole.
    for dir in fixture_dirs() {
        let model = Model::open(dir.join("model.ple")).unwrap();
        let (cols, batch) = load_inputs(&model, &dir);
        let (whole, whole_gates) = score(&model, &cols, batch);
        let mut start = 0;
        for size in [1usize, 7, 2, 13, 64].iter().cycle() {
            if start >= batch {
                break;
            }
            let end = (start + size).min(batch);
            let part: Vec<Column> = model
                .inputs()
                .iter()
                .zip(&cols)
                .map(|(f, c)| c.rows(f.values_per_sample(), start, end))
                .collect();
            let (out, gates) = score(&model, &part, end - start);
            let ow = model.output_width();
            let gw = model.gate_width();
            assert!(
                out.iter()
                    .zip(&whole[start * ow..end * ow])
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{}: samples {start}..{end} differ when scored as their own batch",
                name(&dir)
            );
            assert!(gates
                .iter()
                .zip(&whole_gates[start * gw..end * gw])
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            start = end;
        }
    }
}

#[test]
fn from_bytes_equals_open() {
    for dir in fixture_dirs() {
        let path = dir.join("model.ple");
        let a = Model::open(&path).unwrap();
        let b = Model::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
        let c = Model::open_with(
            &path,
            &LoadOptions {
                read_into_memory: true,
                verify_data: true,
                ..Default::default()
            },
        )
        .unwrap();
        let (cols, batch) = load_inputs(&a, &dir);
        let (x, _) = score(&a, &cols, batch);
        assert_eq!(x, score(&b, &cols, batch).0);
        assert_eq!(x, score(&c, &cols, batch).0);
    }
}
