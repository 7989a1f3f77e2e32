//! Loader validation: every rule of FORMAT.md §4 has a case here that breaks exactly that rule
//! (checksums recomputed, so the check behind them is what fires), plus exhaustive truncation and
//! seeded random mutation: every case must be an error or a model that scores without panicking.

use ple_testkit as common;

use common::synth::{self, Shape};
use common::Column;
use ple::format::codes::{NodeOp, Pooling, TowerInput};
use ple::format::{SourceRecord, NONE};
use ple::{Error, Input, Model, Session};
use ple_testkit::writer::{fix_checksums, Writer};

fn load(w: &Writer) -> Result<Model, Error> {
    Model::from_bytes(&w.to_bytes())
}

fn expect_invalid(w: &Writer, needle: &str) {
    match load(w) {
        Ok(_) => panic!("loaded a file that should fail with '{needle}'"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(needle),
                "expected an error containing '{needle}', got: {msg}"
            );
        }
    }
}

fn score_random(model: &Model, batch: usize, seed: u64) -> Vec<f32> {
    let cols = synth::inputs(model, batch, seed);
    let inputs: Vec<Input> = cols.iter().map(Column::as_input).collect();
    let mut s = Session::new(model, batch).unwrap();
    let mut out = vec![0f32; batch * model.output_width()];
    s.run(&inputs, batch, &mut out, None).unwrap();
    out
}

#[test]
fn synthetic_models_load_and_score() {
    for (levels, specific, shared) in [(1, 0, 3), (1, 2, 1), (2, 1, 1), (3, 2, 2)] {
        let shape = Shape {
            levels,
            specific,
            shared,
            ..Shape::default()
        };
        let model = load(&synth::ple(&shape, 7)).unwrap();
        let out = score_random(&model, 9, 1);
        assert!(
            out.iter().all(|&p| p > 0.0 && p < 1.0),
            "sigmoid outputs in (0,1): {out:?}"
        );
        assert_eq!(model.gates().len(), levels * 2 + (levels - 1));
    }
}

#[test]
fn header_errors() {
    let good = synth::ple(&Shape::default(), 1).to_bytes();
    let check = |bytes: &[u8], needle: &str| {
        let msg = Model::from_bytes(bytes)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains(needle), "expected '{needle}', got '{msg}'");
    };
    check(&good[..63], "shorter than the 64-byte header");
    check(&[], "shorter than the 64-byte header");
    let mut b = good.clone();
    b[0] = b'X';
    check(&b, "wrong magic");
    let mut b = good.clone();
    b[8] = 2; // major 2
    check(&b, "unsupported .ple format version 2.0");
    let mut b = good.clone();
    b[100] ^= 1; // inside the metadata
    check(&b, "checksum mismatch");
    let mut b = good.clone();
    b.extend_from_slice(&[0; 64]);
    check(&b, "truncated or appended");
    // Data corruption is caught only when asked for.
    let mut b = good.clone();
    let last = b.len() - 70;
    b[last] ^= 0x40;
    assert!(Model::from_bytes(&b).is_ok());
    let opts = ple::LoadOptions {
        verify_data: true,
        ..Default::default()
    };
    let msg = Model::from_bytes_with(&b, &opts).unwrap_err().to_string();
    assert!(msg.contains("tensor data checksum mismatch"), "{msg}");
}

#[test]
fn every_truncation_is_an_error() {
    let good = synth::ple(&Shape::default(), 2).to_bytes();
    for len in 0..good.len() {
        assert!(
            Model::from_bytes(&good[..len]).is_err(),
            "truncated to {len} bytes but loaded"
        );
    }
    // Truncated with the header patched to match (file_size, data_size) and checksums fixed: the
    // tensor table must still catch it.
    for len in (64..good.len()).step_by(7) {
        let mut b = good[..len].to_vec();
        b[16..24].copy_from_slice(&(len as u64).to_le_bytes());
        let data_offset = u64::from_le_bytes(b[40..48].try_into().unwrap());
        b[48..56].copy_from_slice(&(len as u64).saturating_sub(data_offset).to_le_bytes());
        fix_checksums(&mut b);
        assert!(
            Model::from_bytes(&b).is_err(),
            "consistent truncation to {len} loaded"
        );
    }
}

#[test]
fn structural_rules() {
    let base = synth::ple(&Shape::default(), 3);
    let mutate = |f: &dyn Fn(&mut Writer)| {
        let mut w = base.clone();
        f(&mut w);
        w
    };
    expect_invalid(
        &mutate(&|w| w.meta.towers[0].input = TowerInput::Bottom),
        "reads the bottom, but there is none",
    );
    expect_invalid(
        &mutate(&|w| w.meta.levels[1].shared_gate = w.meta.levels[0].shared_gate),
        "has a shared gate",
    );
    expect_invalid(
        &mutate(&|w| w.meta.levels[0].shared_gate = NONE),
        "has no shared gate",
    );
    expect_invalid(
        &mutate(&|w| w.meta.levels[0].task_gates[1] = w.meta.levels[0].task_gates[0]),
        "reuses MLP",
    );
    expect_invalid(
        &mutate(&|w| w.meta.mlps[0][0].act_scalar = 1.0),
        "takes no parameters",
    );
    expect_invalid(
        &mutate(&|w| w.meta.mlps[0][1].weight = w.meta.mlps[0][0].weight),
        "inputs, but the previous layer outputs",
    );
    expect_invalid(
        &mutate(&|w| w.meta.x0_order[0] = w.meta.x0_order[1]),
        "not a permutation",
    );
    expect_invalid(
        &mutate(&|w| w.meta.features[1].width += 1),
        "must be plain [vocab",
    );
    expect_invalid(
        &mutate(&|w| w.meta.features[3].pooling = None),
        "feature 3 'q0': a sequence feature needs a pooling",
    );
    expect_invalid(
        &mutate(&|w| w.meta.features[1].pooling = Some(Pooling::Sum)),
        "feature 1 's0': a sparse feature has no pooling",
    );
    expect_invalid(
        &mutate(&|w| w.meta.features[0].ids_through_f32 = true),
        "feature 0 'dense': a dense feature has no pooling, mask, flags",
    );
    expect_invalid(
        &mutate(&|w| w.meta.features[0].width = 0),
        "width 0 out of range",
    );
    expect_invalid(
        &mutate(&|w| w.meta.outputs[1].name = w.meta.outputs[0].name),
        "duplicate output name",
    );
    expect_invalid(&mutate(&|w| w.meta.outputs[0].a = 9), "names tower 9");
    expect_invalid(
        &mutate(&|w| w.meta.tensors[0].size += 4),
        "size is 324 bytes, but 20x4 f32 plain needs 320",
    );
    expect_invalid(
        &mutate(&|w| w.meta.mlps[0][0].bias = w.meta.mlps[0][0].weight),
        "expected plain f32",
    );
    expect_invalid(
        &mutate(&|w| w.meta.levels[0].task_experts[0] = 999),
        "names MLP 999",
    );
    expect_invalid(
        &mutate(&|w| {
            w.meta.mlps.push(w.meta.mlps[0].clone());
        }),
        "is not used",
    );
    expect_invalid(&mutate(&|w| w.meta.n_tasks = 0), "task count 0");
    // Gate width must equal the number of experts it mixes.
    let wider = Shape {
        shared: 2,
        ..Shape::default()
    };
    let mut w = synth::ple(&wider, 4);
    w.meta.levels[0].shared_experts.pop();
    w.meta.levels[0].n_shared = 1;
    expect_invalid(&w, "weights, but it mixes");
}

/// Every field the file stores as a code (FORMAT.md §3), set to a byte that names no code: the
/// error names the record, the field, the value and the codes that exist.
#[test]
fn unknown_codes() {
    let w = synth::ple(&Shape::default(), 3);
    let (good, at) = w.to_bytes_with_offsets();
    // (record start, byte offset of the field inside the record, value, expected message)
    let cases = [
        (at.tensors[0], 4, 4, "tensor 0 'table.s0': unknown dtype 4 (known: 1 f32, 2 f16, 3 i8)"),
        (at.tensors[0], 5, 3, "tensor 0 'table.s0': unknown layout 3 (known: 0 plain, 1 panel16, 2 panel16x4)"),
        (at.features[0], 4, 9, "feature 0 'dense': unknown kind 9 (known: 1 dense, 2 sparse, 3 sequence)"),
        (at.features[3], 5, 7, "feature 3 'q0': unknown pooling 7 (known: 1 sum, 2 mean, 3 max)"),
        (at.features[3], 6, 2, "feature 3 'q0': unknown mask 2 (known: 0 none, 1 pad id)"),
        (at.features[1], 7, 4, "feature 1 's0': unknown flag bits 0x4"),
        (at.features[1], 7, 2, "feature 1 's0': flag bit 1 (embedding vectors from the caller) must be set exactly when a sparse or sequence feature has no table"),
        (at.features[0], 7, 2, "feature 0 'dense': flag bit 1 (embedding vectors from the caller) must be set exactly"),
        (at.layers[0][0], 8, 42, "MLP 0 layer 0: unknown activation code 42 (known: 0 identity, 1 relu, 2 sigmoid, 3 tanh, 4 leaky_relu, 5 prelu, 6 dice_rechub, 7 dice_bn, 8 softmax)"),
        (at.towers[1], 4, 4, "tower 1: unknown tower input code 4 (known: 0 x0, 1 bottom, 2 level, 3 node)"),
        // A node input in a file without a node section (format 1.0).
        (at.towers[1], 4, 3, "tower 1 reads a graph node, which needs format 1.3 (the file is 1.0)"),
        (at.towers[0], 5, 1, "tower 0: unknown output activation code 1 (known: 0 identity, 2 sigmoid)"),
        (at.outputs[1], 4, 2, "output 1 'task1': unknown output kind 2 (known: 0 tower, 1 product)"),
    ];
    for (record, field, value, expected) in cases {
        let mut b = good.clone();
        b[record + field] = value;
        fix_checksums(&mut b);
        let msg = Model::from_bytes(&b).unwrap_err().to_string();
        assert!(msg.contains(expected), "expected '{expected}', got '{msg}'");
    }
}

#[test]
fn random_mutations_never_panic() {
    // 10,000 seeded mutations of a valid file: byte flips and u32 field rewrites, half of them with
    // the checksums recomputed so the validation behind them is exercised. Each must be an error
    // or a model that scores random valid input without panicking.
    let good = synth::ple(
        &Shape {
            levels: 2,
            specific: 2,
            shared: 1,
            ..Shape::default()
        },
        5,
    )
    .to_bytes();
    let meta_end = 64 + u64::from_le_bytes(good[32..40].try_into().unwrap()) as usize;
    let mut rng = synth::Rng(99);
    let (mut loaded, mut rejected) = (0, 0);
    for case in 0..10_000u64 {
        let mut b = good.clone();
        let edits = 1 + rng.below(3);
        for _ in 0..edits {
            // Mostly the header and metadata, where the structure lives.
            let at = if rng.below(4) == 0 {
                rng.below(b.len() as u64)
            } else {
                rng.below(meta_end as u64)
            } as usize;
            match rng.below(3) {
                0 => b[at] ^= 1 << rng.below(8),
                1 => b[at] = rng.below(256) as u8,
                _ if at + 4 <= b.len() => {
                    let v = [
                        0u32,
                        1,
                        2,
                        15,
                        16,
                        17,
                        255,
                        65535,
                        u32::MAX,
                        u32::MAX - 1,
                        1 << 31,
                    ][rng.below(11) as usize];
                    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                _ => {}
            }
        }
        if case % 2 == 0 {
            fix_checksums(&mut b);
        }
        let result = std::panic::catch_unwind(|| match Model::from_bytes(&b) {
            Ok(model) => {
                let _ = score_random(&model, 3, case);
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
            Err(_) => panic!("mutation case {case} panicked"),
        }
    }
    eprintln!("10000 mutations: {rejected} rejected, {loaded} loaded and scored");
    assert!(rejected > 5000);
}

// ---- graph nodes (format 1.3): the AITM shape of crates/testkit/src/synth.rs ----------------

fn aitm(tasks: usize) -> Writer {
    synth::aitm(
        &Shape {
            tasks,
            ..Shape::default()
        },
        11,
    )
}

#[test]
fn node_models_load_and_score() {
    for tasks in [1, 2, 3, 5] {
        let w = aitm(tasks);
        let bytes = w.to_bytes();
        assert_eq!(
            u16::from_le_bytes([bytes[10], bytes[11]]),
            3,
            "a file with nodes is 1.3"
        );
        let model = load(&w).unwrap();
        assert_eq!(model.graph().nodes.len(), 3 * tasks - 2);
        let out = score_random(&model, 7, 3);
        assert!(out.iter().all(|&p| p > 0.0 && p < 1.0), "{out:?}");
    }
}

#[test]
fn node_rules() {
    let base = aitm(3);
    let mutate = |f: &dyn Fn(&mut Writer)| {
        let mut w = base.clone();
        f(&mut w);
        w
    };
    let node = |source, index| SourceRecord { source, index };
    // Nodes 0..2: bottoms; 3: info of task 0; 4: attention of task 1; 5, 6: task 2's.
    expect_invalid(
        &mutate(&|w| w.meta.nodes[3].inputs[0] = node(TowerInput::Node, 5)),
        "node 3 (mlp) input 0 reads node 5, but only nodes 0..3 come before it",
    );
    expect_invalid(
        &mutate(&|w| w.meta.nodes[4].inputs[1] = node(TowerInput::Node, 4)),
        "reads node 4, but only nodes 0..4 come before it",
    );
    expect_invalid(
        &mutate(&|w| w.meta.nodes[4].inputs[1] = node(TowerInput::X0, 0)),
        "node 4 (attention) input 1 is 15 wide, but its first input is 8 wide",
    );
    expect_invalid(
        &mutate(&|w| w.meta.nodes[4].inputs[0] = node(TowerInput::LastLevel, 0)),
        "reads the last level, but there are no levels",
    );
    expect_invalid(
        &mutate(&|w| w.meta.nodes[0].inputs[0] = node(TowerInput::X0, 5)),
        "reads x0 with index 5, which must be 0",
    );
    expect_invalid(
        &mutate(&|w| w.meta.nodes[0].inputs[0] = node(TowerInput::Bottom, 0)),
        "node 0 (mlp) input 0 reads the bottom, but there is none",
    );
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        expect_invalid(
            &mutate(&|w| w.meta.nodes[4].temperature = bad),
            "must be finite and positive",
        );
    }
    expect_invalid(
        &mutate(&|w| w.meta.nodes[0].temperature = -0.0),
        "node 0 (mlp): the scalar field must be 0",
    );
    expect_invalid(
        &mutate(&|w| w.meta.nodes[1].mlps[0] = w.meta.nodes[0].mlps[0]),
        "reuses MLP",
    );
    expect_invalid(
        &mutate(&|w| w.meta.nodes[4].mlps[1] = w.meta.nodes[0].mlps[0]),
        "node 4 (attention) key reuses MLP",
    );
    expect_invalid(
        &mutate(&|w| w.meta.tower_nodes[2] = 4),
        "node 6 is not read by a later node or a tower",
    );
    expect_invalid(
        &mutate(&|w| w.meta.tower_nodes[1] = NONE),
        "tower 1 reads node but its node entry is NONE",
    );
    expect_invalid(
        &mutate(&|w| w.meta.tower_nodes[2] = 99),
        "tower 2 reads node 99, but only nodes 0..7 come before it",
    );
    expect_invalid(
        &mutate(&|w| w.meta.towers[0].input = TowerInput::X0),
        "tower 0 reads x0 but its node entry is 0",
    );
    expect_invalid(&mutate(&|w| w.meta.nodes[0].mlps[0] = 999), "names MLP 999");
    expect_invalid(
        &mutate(&|w| w.meta.nodes[4].inputs.clear()),
        "node 4 (attention) has 0 inputs, must be 1..=64",
    );
    expect_invalid(
        &mutate(&|w| {
            let extra = w.meta.nodes[0].inputs[0];
            w.meta.nodes[0].inputs.push(extra);
        }),
        "node 0 (mlp) has 2 inputs, must be 1",
    );
}

/// Node codes, reserved bytes and counts, corrupted in the bytes (the typed records cannot hold
/// them); the error names the node, the field and the value.
#[test]
fn node_section_bytes() {
    let (good, at) = aitm(2).to_bytes_with_offsets();
    let count_at = at.nodes[0] - 4;
    let cases: [(usize, &[u8], &str); 7] = [
        (
            at.nodes[0],
            &[7],
            "node 0: unknown node op 7 (known: 1 mlp, 2 attention)",
        ),
        (at.nodes[0] + 1, &[1], "node 0 reserved field must be zero"),
        (
            at.nodes[0] + 8,
            &[9],
            "node 0 input 0: unknown tower input code 9 (known: 0 x0, 1 bottom, 2 level, 3 node)",
        ),
        (
            at.nodes[0] + 9,
            &[1],
            "node 0 input 0 reserved field must be zero",
        ),
        (
            count_at,
            &5000u32.to_le_bytes(),
            "node count is 5000, over the limit of 4096",
        ),
        (
            count_at,
            &4000u32.to_le_bytes(),
            "node count is 4000, but only",
        ),
        (
            at.nodes[0] + 4,
            &65u32.to_le_bytes(),
            "node 0 input count is 65, over the limit of 64",
        ),
    ];
    for (offset, bytes, expected) in cases {
        let mut b = good.clone();
        b[offset..offset + bytes.len()].copy_from_slice(bytes);
        fix_checksums(&mut b);
        let msg = Model::from_bytes(&b).unwrap_err().to_string();
        assert!(msg.contains(expected), "expected '{expected}', got '{msg}'");
    }
    // A 1.3 file declared 1.1: its towers read nodes, which 1.1 does not have.
    let mut b = good.clone();
    b[10] = 1;
    fix_checksums(&mut b);
    let msg = Model::from_bytes(&b).unwrap_err().to_string();
    assert!(
        msg.contains("tower 0 reads a graph node, which needs format 1.3 (the file is 1.1)"),
        "{msg}"
    );
    // A later minor (1.4) may append fields after the node section: accepted.
    let (w, _) = (aitm(2), ());
    let mut bytes = w.to_bytes();
    let meta_size = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let data_offset = u64::from_le_bytes(bytes[40..48].try_into().unwrap()) as usize;
    if 64 + meta_size + 4 <= data_offset {
        bytes[10] = 4;
        bytes[32..40].copy_from_slice(&((meta_size + 4) as u64).to_le_bytes());
        fix_checksums(&mut bytes);
        assert!(
            Model::from_bytes(&bytes).is_ok(),
            "a 1.4 file with 4 appended bytes"
        );
    }
}

#[test]
fn every_truncation_of_a_node_file_is_an_error() {
    let good = aitm(3).to_bytes();
    for len in 0..good.len() {
        assert!(
            Model::from_bytes(&good[..len]).is_err(),
            "truncated to {len}"
        );
    }
}

#[test]
fn random_node_file_mutations_never_panic() {
    // As random_mutations_never_panic, on a 1.3 file with nodes, aimed at the metadata's tail
    // (towers, outputs and the node section) half of the time.
    let good = aitm(3).to_bytes();
    let meta_end = 64 + u64::from_le_bytes(good[32..40].try_into().unwrap()) as usize;
    let tail = meta_end - 200;
    let mut rng = synth::Rng(7);
    let (mut loaded, mut rejected) = (0, 0);
    for case in 0..4_000u64 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(3) {
            let at = match rng.below(4) {
                0 => rng.below(b.len() as u64) as usize,
                1 => rng.below(meta_end as u64) as usize,
                _ => tail + rng.below(200) as usize,
            };
            match rng.below(3) {
                0 => b[at] ^= 1 << rng.below(8),
                1 => b[at] = rng.below(256) as u8,
                _ if at + 4 <= b.len() => {
                    let v = [0u32, 1, 2, 3, 4, 5, 7, 64, 65, u32::MAX, 0x3f80_0000]
                        [rng.below(11) as usize];
                    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                _ => {}
            }
        }
        if case % 4 != 0 {
            fix_checksums(&mut b);
        }
        let result = std::panic::catch_unwind(|| match Model::from_bytes(&b) {
            Ok(model) => {
                let _ = score_random(&model, 3, case);
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
            Err(_) => panic!("node mutation case {case} panicked"),
        }
    }
    eprintln!("4000 node-file mutations: {rejected} rejected, {loaded} loaded and scored");
    assert!(rejected > 2000 && loaded > 0);
}

#[test]
fn node_op_codes_round_trip() {
    assert_eq!(NodeOp::try_from(2), Ok(NodeOp::Attention));
    assert!(NodeOp::try_from(0).is_err());
}
