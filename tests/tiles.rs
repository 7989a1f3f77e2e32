//! Batches are scored in tiles (64 samples, 128 when the dense weights stream from memory): the
//! tile size follows the weights, a session holds exactly one tile of scratch, and a sample's
//! scores do not depend on where the tile boundaries fall.

use ple_testkit as common;

use common::synth::{self, Shape};
use common::Column;
use ple::{DType, Input, Model, Session};

fn model(expert_width: usize, dtype: DType) -> Model {
    let shape = Shape {
        tasks: 2,
        specific: 1,
        shared: 1,
        levels: 1,
        expert_dims: vec![expert_width],
        tower_dims: vec![8],
        dense_width: expert_width,
        sparse: 0,
        sequences: 0,
        dtype,
        ..Shape::default()
    };
    Model::from_bytes(&synth::ple(&shape, 7).to_bytes()).unwrap()
}

#[test]
fn tile_size_follows_the_weight_size() {
    // 3 experts of 1200×1200 f32 = 16.5 MiB of dense weights: streaming; in f16, 8.2 MiB: still
    // over 8 MiB. 3 experts of 256×256: 0.75 MiB, cached.
    assert_eq!(model(1200, DType::F32).tile_rows(), 128);
    assert_eq!(model(1200, DType::F16).tile_rows(), 128);
    assert_eq!(model(256, DType::F32).tile_rows(), 64);
}

#[test]
fn a_session_holds_one_tile_of_scratch() {
    for m in [model(1200, DType::F16), model(256, DType::F32)] {
        let per_sample = m.scratch_floats_per_sample() * 4;
        for max_batch in [1, 63, 64, 65, 128, 129, 1000] {
            let s = Session::new(&m, max_batch).unwrap();
            let rows = max_batch.min(m.tile_rows());
            assert_eq!(
                s.scratch_bytes(),
                rows * per_sample,
                "max_batch {max_batch}"
            );
        }
    }
}

#[test]
fn scores_do_not_depend_on_tile_boundaries() {
    let m = model(1200, DType::F16);
    let batch = 300; // tiles of 128, 128 and 44
    let cols = synth::inputs(&m, batch, 11);
    let inputs: Vec<Input> = cols.iter().map(Column::as_input).collect();
    let width = m.output_width();
    let mut all = vec![0f32; batch * width];
    Session::new(&m, batch)
        .unwrap()
        .run(&inputs, batch, &mut all, None)
        .unwrap();
    let Input::Floats(x) = inputs[0] else {
        panic!("a dense-input model")
    };
    let x_width = x.len() / batch;
    let mut one = Session::new(&m, 1).unwrap();
    for i in [0, 1, 127, 128, 129, 255, 256, 299] {
        let mut out = vec![0f32; width];
        one.run_dense(&x[i * x_width..(i + 1) * x_width], 1, &mut out)
            .unwrap();
        assert_eq!(
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            all[i * width..(i + 1) * width]
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
            "sample {i}"
        );
        assert!(out.iter().all(|v| v.is_finite()));
    }
}
