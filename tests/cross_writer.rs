//! The Rust code table and writer agree with the Python package (the "both writers produce
//! identical bytes" claim of crates/testkit/src/writer.rs).
//!
//! `tests/cross_writer/` holds, committed: `codes.txt` (every code, constant and limit of
//! FORMAT.md) and `f32.ple` / `f16.ple`, a model that uses every code, written by the Python
//! package from `cross_spec()` in python/tests/test_cross_writer.py. Here the test kit's writer
//! builds the same model and must produce the same bytes, and `ple::format`'s tables must print as
//! `codes.txt`; the Python test requires the same of the Python package. Each side is checked
//! against the committed files, so `cargo test` needs no Python.

use ple::format::codes::{
    Activation, InputKind, Layout, Mask, NodeOp, OutputCode, Pooling, TowerActivation, TowerInput,
    FEATURE_FLAG_CALLER_VECTORS, FEATURE_FLAG_IDS_F32,
};
use ple::format::{
    limits, DType, FeatureRecord, LayerRecord, LevelRecord, NodeRecord, OutputRecord, SourceRecord,
    TowerRecord, ALIGN, HEADER_SIZE, MAGIC, MAJOR, MINOR, NONE,
};
use ple::Model;
use ple_testkit::{repo_root, writer::Writer};

fn committed(name: &str) -> Vec<u8> {
    let path = repo_root().join("tests/cross_writer").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The table as python/ple_runtime/codes.py's `table()` prints it.
fn code_table() -> String {
    let fields: [(&str, &[(u8, &str)]); 10] = [
        (DType::FIELD, DType::KNOWN),
        (Layout::FIELD, Layout::KNOWN),
        (InputKind::FIELD, InputKind::KNOWN),
        (Pooling::FIELD, Pooling::KNOWN),
        (Mask::FIELD, Mask::KNOWN),
        (Activation::FIELD, Activation::KNOWN),
        (TowerInput::FIELD, TowerInput::KNOWN),
        (TowerActivation::FIELD, TowerActivation::KNOWN),
        (OutputCode::FIELD, OutputCode::KNOWN),
        (NodeOp::FIELD, NodeOp::KNOWN),
    ];
    let mut out = String::new();
    for (field, known) in fields {
        for (code, name) in known {
            out += &format!("{field}\t{code}\t{name}\n");
        }
    }
    out += &format!("feature flag\t{FEATURE_FLAG_IDS_F32}\tids through f32\n");
    out += &format!("feature flag\t{FEATURE_FLAG_CALLER_VECTORS}\tcaller vectors\n");
    let magic: String = MAGIC.iter().map(|b| format!("{b:02x}")).collect();
    let constants: [(&str, String); 23] = [
        ("magic", magic),
        ("major", MAJOR.to_string()),
        ("minor", MINOR.to_string()),
        ("header size", HEADER_SIZE.to_string()),
        ("alignment", ALIGN.to_string()),
        ("none", NONE.to_string()),
        ("metadata bytes", limits::META_SIZE.to_string()),
        ("strings", limits::STRINGS.to_string()),
        ("string bytes", limits::STRING_LEN.to_string()),
        ("tensors", limits::TENSORS.to_string()),
        ("tensor dim below", limits::TENSOR_DIM.to_string()),
        ("features", limits::FEATURES.to_string()),
        ("max_len", limits::MAX_LEN.to_string()),
        ("dense width", limits::DENSE_WIDTH.to_string()),
        ("MLP layers", limits::MLP_LAYERS.to_string()),
        ("MLPs", limits::MLPS.to_string()),
        ("levels", limits::LEVELS.to_string()),
        ("tasks", limits::TASKS.to_string()),
        ("experts per level", limits::EXPERTS.to_string()),
        ("outputs", limits::OUTPUTS.to_string()),
        (
            "working floats per sample",
            limits::SCRATCH_PER_SAMPLE.to_string(),
        ),
        ("nodes", limits::NODES.to_string()),
        ("node inputs", limits::NODE_INPUTS.to_string()),
    ];
    for (name, value) in constants {
        out += &format!("constant\t{name}\t{value}\n");
    }
    out
}

#[test]
fn code_table_matches_the_committed_one() {
    let ours = code_table();
    let theirs = String::from_utf8(committed("codes.txt")).unwrap();
    assert_eq!(
        ours, theirs,
        "the Rust code table no longer prints as tests/cross_writer/codes.txt"
    );
}

#[test]
fn every_listed_code_decodes_and_no_other() {
    fn check<T: TryFrom<u8> + Into<u8> + Copy>(known: &[(u8, &str)]) {
        for byte in 0..=255u8 {
            let listed = known.iter().any(|&(c, _)| c == byte);
            match T::try_from(byte) {
                Ok(code) => assert!(listed && code.into() == byte, "{byte} decodes"),
                Err(_) => assert!(!listed, "{byte} is listed but does not decode"),
            }
        }
    }
    check::<DType>(DType::KNOWN);
    check::<Layout>(Layout::KNOWN);
    check::<InputKind>(InputKind::KNOWN);
    check::<Pooling>(Pooling::KNOWN);
    check::<Mask>(Mask::KNOWN);
    check::<Activation>(Activation::KNOWN);
    check::<TowerInput>(TowerInput::KNOWN);
    check::<TowerActivation>(TowerActivation::KNOWN);
    check::<OutputCode>(OutputCode::KNOWN);
    check::<NodeOp>(NodeOp::KNOWN);
}

/// The values python/tests/test_cross_writer.py's `values` gives the tensor `name`: multiples of
/// 1/16 in [-0.5, 0.5], exact in f16 and f32.
fn values(name: &str, n: usize) -> Vec<f32> {
    let salt: usize = name.bytes().map(usize::from).sum();
    (0..n)
        .map(|i| (((i * 7 + salt) % 17) as f32 - 8.0) / 16.0)
        .collect()
}

/// One layer of the cross model, as the Python writer lays it out: weight `<prefix>.w`, bias
/// `<prefix>.b`, activation parameter `<prefix>.a`, in that order.
struct Layer<'a> {
    prefix: &'a str,
    out: usize,
    inp: usize,
    act: Activation,
    bias: bool,
}

fn layer(prefix: &str, out: usize, inp: usize, act: Activation) -> Layer<'_> {
    Layer {
        prefix,
        out,
        inp,
        act,
        bias: true,
    }
}

fn no_bias(l: Layer<'_>) -> Layer<'_> {
    Layer { bias: false, ..l }
}

fn add_mlp(w: &mut Writer, dtype: DType, layers: &[Layer]) -> u32 {
    let mut records = Vec::new();
    for l in layers {
        let (n, p) = (l.out, l.prefix);
        let weight_name = format!("{p}.w");
        let weight = w.weight(
            &weight_name,
            dtype,
            n,
            l.inp,
            &values(&weight_name, n * l.inp),
        );
        let bias = if l.bias {
            let name = format!("{p}.b");
            w.plain(&name, DType::F32, 1, n, &values(&name, n))
        } else {
            NONE
        };
        let a = format!("{p}.a");
        let (act_scalar, act_param) = match l.act {
            Activation::LeakyRelu => (0.25, NONE),
            Activation::PRelu => {
                // Per channel in level 0's shared expert, one slope in level 1's.
                let count = if p.starts_with("l0") { n } else { 1 };
                (0.0, w.plain(&a, DType::F32, 1, count, &values(&a, count)))
            }
            Activation::DicePerSample => (1e-3, w.plain(&a, DType::F32, 1, 1, &values(&a, 1))),
            Activation::DiceBn => {
                // scale = gamma / sqrt(0.75 + 0.25) = gamma; shift = beta − mean·scale.
                let gamma = values(&format!("{a}.gamma"), n);
                let beta = values(&format!("{a}.beta"), n);
                let mean = values(&format!("{a}.mean"), n);
                let shift = (0..n).map(|j| beta[j] - mean[j] * gamma[j]);
                let rows: Vec<f32> = (gamma.iter().copied())
                    .chain(shift)
                    .chain(values(&format!("{a}.alpha"), n))
                    .collect();
                (0.0, w.plain(&a, DType::F32, 3, n, &rows))
            }
            _ => (0.0, NONE),
        };
        records.push(LayerRecord {
            weight,
            bias,
            act: l.act,
            act_scalar,
            act_param,
        });
    }
    w.meta.mlps.push(records);
    (w.meta.mlps.len() - 1) as u32
}

/// `cross_spec()` of python/tests/test_cross_writer.py, built in the Python writer's order.
fn cross_model(dtype: DType) -> Writer {
    use Activation::*;
    let mut w = Writer::new("cross");
    let names = ["price", "user", "item", "hist", "tags", "cats"].map(|n| w.string(n));
    let [user, item, tag] = [("user", 6), ("item", 7), ("tag", 5)].map(|(table, vocab)| {
        let name = format!("table.{table}");
        w.plain(&name, dtype, vocab, 4, &values(&name, vocab * 4))
    });
    let sparse = |name, table, ids_through_f32| FeatureRecord {
        name,
        kind: InputKind::Sparse,
        pooling: None,
        mask: Mask::None,
        ids_through_f32,
        width: 4,
        max_len: 0,
        table,
        pad_id: 0,
    };
    let sequence = |name, table, max_len, pooling, pad_id: Option<i64>| FeatureRecord {
        kind: InputKind::Sequence,
        pooling: Some(pooling),
        mask: pad_id.map_or(Mask::None, |_| Mask::PadId),
        max_len,
        pad_id: pad_id.unwrap_or(0),
        ..sparse(name, table, false)
    };
    let dense = FeatureRecord {
        kind: InputKind::Dense,
        width: 2,
        table: NONE,
        ..sparse(names[0], NONE, false)
    };
    w.meta.features = vec![
        dense,
        sparse(names[1], user, false),
        sparse(names[2], item, true),
        sequence(names[3], item, 3, Pooling::Sum, Some(0)),
        sequence(names[4], tag, 2, Pooling::Mean, None),
        sequence(names[5], tag, 4, Pooling::Max, Some(0)),
    ];
    w.meta.x0_order = vec![1, 2, 3, 4, 5, 0];

    let dt = dtype;
    w.meta.bottom = add_mlp(
        &mut w,
        dt,
        &[
            layer("bottom.0", 18, 22, Relu),
            no_bias(layer("bottom.1", 8, 18, LeakyRelu)),
        ],
    );
    let level0_experts = [
        layer("l0.t0.e0.0", 6, 8, Relu),
        layer("l0.t1.e0.0", 6, 8, Tanh),
        no_bias(layer("l0.t2.e0.0", 6, 8, Sigmoid)),
        layer("l0.s.e0.0", 6, 8, PRelu),
    ];
    let level1_experts = [
        layer("l1.t0.e0.0", 5, 6, PRelu),
        layer("l1.t1.e0.0", 5, 6, DicePerSample),
        layer("l1.t2.e0.0", 5, 6, DiceBn),
        layer("l1.s.e0.0", 5, 6, Softmax),
    ];
    for (l, (experts, in_width)) in [(level0_experts, 8), (level1_experts, 6)]
        .into_iter()
        .enumerate()
    {
        let mut mlps: Vec<u32> = experts
            .into_iter()
            .map(|e| add_mlp(&mut w, dt, &[e]))
            .collect();
        let shared_experts = vec![mlps.pop().unwrap()];
        let gates: Vec<String> = (0..3).map(|t| format!("l{l}.t{t}.g.0")).collect();
        let task_gates = (gates.iter())
            .map(|g| add_mlp(&mut w, dt, &[layer(g, 2, in_width, Identity)]))
            .collect();
        let shared_gate = if l == 0 {
            add_mlp(&mut w, dt, &[no_bias(layer("l0.s.g.0", 4, 8, Identity))])
        } else {
            NONE
        };
        w.meta.levels.push(LevelRecord {
            n_task_experts: 1,
            n_shared: 1,
            task_experts: mlps,
            shared_experts,
            task_gates,
            shared_gate,
        });
    }
    w.meta.n_tasks = 3;
    let source = |source, index| SourceRecord { source, index };
    let node0 = add_mlp(&mut w, dt, &[layer("node0.0", 4, 22, Relu)]);
    let node1 = add_mlp(&mut w, dt, &[layer("node1.0", 4, 5, Tanh)]);
    let attention = [
        no_bias(layer("node2.query.0", 3, 4, Identity)),
        layer("node2.key.0", 3, 4, Identity),
        layer("node2.value.0", 2, 4, Identity),
    ]
    .map(|l| add_mlp(&mut w, dt, &[l]));
    w.meta.nodes = vec![
        NodeRecord {
            op: NodeOp::Mlp,
            inputs: vec![source(TowerInput::X0, 0)],
            mlps: vec![node0],
            temperature: 0.0,
        },
        NodeRecord {
            op: NodeOp::Mlp,
            inputs: vec![source(TowerInput::LastLevel, 2)],
            mlps: vec![node1],
            temperature: 0.0,
        },
        NodeRecord {
            op: NodeOp::Attention,
            inputs: vec![source(TowerInput::Node, 0), source(TowerInput::Node, 1)],
            mlps: attention.to_vec(),
            temperature: 1.5,
        },
    ];
    w.meta.tower_nodes = vec![NONE, NONE, 2];
    let towers = [
        (
            vec![
                layer("tower0.0", 4, 5, Relu),
                layer("tower0.1", 1, 4, Identity),
            ],
            TowerInput::LastLevel,
            TowerActivation::Sigmoid,
        ),
        (
            vec![layer("tower1.0", 1, 8, Identity)],
            TowerInput::Bottom,
            TowerActivation::Identity,
        ),
        (
            vec![no_bias(layer("tower2.0", 1, 2, Identity))],
            TowerInput::Node,
            TowerActivation::Sigmoid,
        ),
    ];
    for (layers, input, out_act) in towers {
        let mlp = add_mlp(&mut w, dt, &layers);
        w.meta.towers.push(TowerRecord {
            mlp,
            input,
            out_act,
        });
    }
    for (name, kind, a, b) in [
        ("ctr", OutputCode::Tower, 0, NONE),
        ("cvr", OutputCode::Tower, 1, NONE),
        ("aux", OutputCode::Tower, 2, NONE),
        ("ctcvr", OutputCode::Product, 0, 1),
    ] {
        let name = w.string(name);
        w.meta.outputs.push(OutputRecord { name, kind, a, b });
    }
    w
}

#[test]
fn rust_writer_bytes_match_the_python_writers() {
    for (dtype, file) in [(DType::F32, "f32.ple"), (DType::F16, "f16.ple")] {
        let ours = cross_model(dtype).to_bytes();
        let theirs = committed(file);
        let first_difference = ours.iter().zip(&theirs).position(|(a, b)| a != b);
        assert!(
            ours == theirs,
            "{file}: the Rust writer's {} bytes differ from the Python writer's {} (first at byte {first_difference:?})",
            ours.len(),
            theirs.len()
        );
        Model::from_bytes(&theirs).expect("the reader accepts the file");
    }
}
