//! Synthetic models built with the Rust writer: random weights, any shape. Used where the test is
//! about the file or the runtime's behaviour (validation, mutation, allocation, threads), not about
//! agreeing with a training library (the fixtures do that).
#![allow(dead_code)]

use crate::writer::Writer;
use ple::format::codes::{
    Activation, InputKind, Mask, NodeOp, OutputCode, Pooling, TowerActivation, TowerInput,
};
use ple::format::{
    FeatureRecord, LayerRecord, LevelRecord, NodeRecord, OutputRecord, SourceRecord, TowerRecord,
    NONE,
};
use ple::DType;

pub struct Rng(pub u64);
impl Rng {
    pub fn f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

/// Shape of a synthetic PLE.
#[derive(Clone)]
pub struct Shape {
    pub tasks: usize,
    pub levels: usize,
    pub specific: usize,
    pub shared: usize,
    pub expert_dims: Vec<usize>,
    pub tower_dims: Vec<usize>,
    pub dense_width: usize,
    pub sparse: usize,
    pub sequences: usize,
    pub dim: usize,
    pub vocab: usize,
    pub max_len: usize,
    pub dtype: DType,
    /// Whether the file holds the embedding tables (else the caller passes vectors). The
    /// weights are the same either way.
    pub tables: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            tasks: 2,
            levels: 2,
            specific: 1,
            shared: 1,
            expert_dims: vec![16, 8],
            tower_dims: vec![8],
            dense_width: 3,
            sparse: 2,
            sequences: 1,
            dim: 4,
            vocab: 20,
            max_len: 5,
            dtype: DType::F32,
            tables: true,
        }
    }
}

fn mlp(
    w: &mut Writer,
    rng: &mut Rng,
    name: &str,
    dtype: DType,
    input: usize,
    dims: &[usize],
    last_act: Activation,
) -> u32 {
    let mut layers = Vec::new();
    let mut k = input;
    for (i, &n) in dims.iter().enumerate() {
        let scale = 1.0 / (k as f32).sqrt();
        // An int8 model keeps narrow layers f32, as the exporter does by default.
        let layer_dtype = match dtype {
            DType::I8 if n < ple::kernels::int8::INT8_MIN_OUTPUTS => DType::F32,
            d => d,
        };
        let weight = w.weight(
            &format!("{name}.{i}.w"),
            layer_dtype,
            n,
            k,
            &rng.vec(n * k, scale),
        );
        let bias = w.plain(&format!("{name}.{i}.b"), DType::F32, 1, n, &rng.vec(n, 0.1));
        let act = if i + 1 == dims.len() {
            last_act
        } else {
            Activation::Relu
        };
        layers.push(LayerRecord {
            weight,
            bias,
            act,
            act_scalar: 0.0,
            act_param: NONE,
        });
        k = n;
    }
    w.meta.mlps.push(layers);
    (w.meta.mlps.len() - 1) as u32
}

/// A PLE (or MMoE with specific = 0, levels = 1) with dense, sparse and sequence inputs.
pub fn ple(shape: &Shape, seed: u64) -> Writer {
    let mut rng = Rng(seed);
    let (mut w, x0) = features(shape, &mut rng);
    let dt = shape.dtype;

    let t = shape.tasks;
    let d = *shape.expert_dims.last().unwrap();
    let mut input = x0;
    let mut mlp = |w: &mut Writer, name: String, input: usize, dims: &[usize], last_act| {
        mlp(w, &mut rng, &name, dt, input, dims, last_act)
    };
    let (experts, gate) = (&shape.expert_dims, Activation::Identity);
    for l in 0..shape.levels {
        let last = l + 1 == shape.levels;
        let task_experts: Vec<u32> = (0..t * shape.specific)
            .map(|e| {
                mlp(
                    &mut w,
                    format!("l{l}.te{e}"),
                    input,
                    experts,
                    Activation::Relu,
                )
            })
            .collect();
        let shared_experts: Vec<u32> = (0..shape.shared)
            .map(|e| {
                mlp(
                    &mut w,
                    format!("l{l}.se{e}"),
                    input,
                    experts,
                    Activation::Relu,
                )
            })
            .collect();
        let task_gates: Vec<u32> = (0..t)
            .map(|g| {
                mlp(
                    &mut w,
                    format!("l{l}.g{g}"),
                    input,
                    &[shape.specific + shape.shared],
                    gate,
                )
            })
            .collect();
        let shared_gate = if last {
            NONE
        } else {
            let n = t * shape.specific + shape.shared;
            mlp(&mut w, format!("l{l}.sg"), input, &[n], gate)
        };
        w.meta.levels.push(LevelRecord {
            n_task_experts: shape.specific as u32,
            n_shared: shape.shared as u32,
            task_experts,
            shared_experts,
            task_gates,
            shared_gate,
        });
        input = d;
    }
    w.meta.n_tasks = t as u32;
    for i in 0..t {
        let mut dims = shape.tower_dims.clone();
        dims.push(1);
        let m = mlp(
            &mut w,
            format!("tower{i}"),
            input,
            &dims,
            Activation::Identity,
        );
        w.meta.towers.push(TowerRecord {
            mlp: m,
            input: if shape.levels > 0 {
                TowerInput::LastLevel
            } else {
                TowerInput::X0
            },
            out_act: TowerActivation::Sigmoid,
        });
        let name = w.string(&format!("task{i}"));
        w.meta.outputs.push(OutputRecord {
            name,
            kind: OutputCode::Tower,
            a: i as u32,
            b: NONE,
        });
    }
    w
}

/// An AITM-shaped model in graph nodes (format 1.3): per task a bottom MLP on x0 (nodes
/// 0..T-1, `shape.expert_dims`); for t ≥ 1 an information MLP of task t-1's vector and an
/// attention node over [task t's bottom output, that information] (query, key, value: one
/// layer each, temperature √D); tower t reads task t's vector, sigmoid.
pub fn aitm(shape: &Shape, seed: u64) -> Writer {
    let mut rng = Rng(seed);
    let (mut w, x0) = features(shape, &mut rng);
    let dt = shape.dtype;
    let t = shape.tasks;
    let d = *shape.expert_dims.last().unwrap();
    let mut mlp = |w: &mut Writer, name: String, input: usize, dims: &[usize], last_act| {
        mlp(w, &mut rng, &name, dt, input, dims, last_act)
    };
    let source = |source, index| SourceRecord { source, index };
    for i in 0..t {
        let m = mlp(
            &mut w,
            format!("node{i}"),
            x0,
            &shape.expert_dims,
            Activation::Relu,
        );
        w.meta.nodes.push(NodeRecord {
            op: NodeOp::Mlp,
            inputs: vec![source(TowerInput::X0, 0)],
            mlps: vec![m],
            temperature: 0.0,
        });
    }
    let mut vector = vec![0u32];
    for task in 1..t {
        let info = w.meta.nodes.len();
        let m = mlp(&mut w, format!("node{info}"), d, &[d], Activation::Relu);
        w.meta.nodes.push(NodeRecord {
            op: NodeOp::Mlp,
            inputs: vec![source(TowerInput::Node, vector[task - 1])],
            mlps: vec![m],
            temperature: 0.0,
        });
        let at = info + 1;
        let mlps = ["query", "key", "value"].map(|p| {
            mlp(
                &mut w,
                format!("node{at}.{p}"),
                d,
                &[d],
                Activation::Identity,
            )
        });
        w.meta.nodes.push(NodeRecord {
            op: NodeOp::Attention,
            inputs: vec![
                source(TowerInput::Node, task as u32),
                source(TowerInput::Node, info as u32),
            ],
            mlps: mlps.to_vec(),
            temperature: (d as f32).sqrt(),
        });
        vector.push(at as u32);
    }
    w.meta.n_tasks = t as u32;
    for (i, &node) in vector.iter().enumerate() {
        let mut dims = shape.tower_dims.clone();
        dims.push(1);
        let m = mlp(&mut w, format!("tower{i}"), d, &dims, Activation::Identity);
        w.meta.towers.push(TowerRecord {
            mlp: m,
            input: TowerInput::Node,
            out_act: TowerActivation::Sigmoid,
        });
        w.meta.tower_nodes.push(node);
        let name = w.string(&format!("task{i}"));
        w.meta.outputs.push(OutputRecord {
            name,
            kind: OutputCode::Tower,
            a: i as u32,
            b: NONE,
        });
    }
    w
}

/// The input features of a synthetic model: a dense feature, sparse features, sequences; returns
/// the writer holding them and x0's width.
fn features(shape: &Shape, rng: &mut Rng) -> (Writer, usize) {
    let mut w = Writer::new("synthetic");
    let dt = shape.dtype;
    let mut x0 = 0;
    if shape.dense_width > 0 {
        let name = w.string("dense");
        w.meta.features.push(FeatureRecord {
            name,
            kind: InputKind::Dense,
            pooling: None,
            mask: Mask::None,
            ids_through_f32: false,
            width: shape.dense_width as u32,
            max_len: 0,
            table: NONE,
            pad_id: 0,
        });
        x0 += shape.dense_width;
    }
    // Sparse features s0.., then sequences q0.. pooled by sum, mean, max in turn (pad id 0).
    for i in 0..shape.sparse + shape.sequences {
        let (name, sequence) = match i.checked_sub(shape.sparse) {
            None => (format!("s{i}"), None),
            Some(q) => (
                format!("q{q}"),
                Some([Pooling::Sum, Pooling::Mean, Pooling::Max][q % 3]),
            ),
        };
        let values = rng.vec(shape.vocab * shape.dim, 0.5);
        // Tables of an int8 model stay f32 (8- and 4-bit tables are not part of the format yet).
        let table = if shape.tables {
            w.plain(
                &format!("table.{name}"),
                if dt == DType::I8 { DType::F32 } else { dt },
                shape.vocab,
                shape.dim,
                &values,
            )
        } else {
            NONE
        };
        let name = w.string(&name);
        w.meta.features.push(FeatureRecord {
            name,
            kind: match sequence {
                None => InputKind::Sparse,
                Some(_) => InputKind::Sequence,
            },
            pooling: sequence,
            mask: sequence.map_or(Mask::None, |_| Mask::PadId),
            ids_through_f32: false,
            width: shape.dim as u32,
            max_len: sequence.map_or(0, |_| shape.max_len as u32),
            table,
            pad_id: 0,
        });
        x0 += shape.dim;
    }
    // Embeddings first, dense last (torch-rechub's order).
    let n = w.meta.features.len() as u32;
    w.meta.x0_order = (0..n)
        .filter(|&i| w.meta.features[i as usize].kind != InputKind::Dense)
        .chain((0..n).filter(|&i| w.meta.features[i as usize].kind == InputKind::Dense))
        .collect();
    (w, x0)
}

/// Random valid inputs for a synthetic model: (ids per id-feature, floats per dense feature).
pub fn inputs(model: &ple::Model, batch: usize, seed: u64) -> Vec<crate::Column> {
    let mut rng = Rng(seed);
    model
        .inputs()
        .iter()
        .map(|f| match f.kind {
            ple::InputKind::Dense => crate::Column::Floats(rng.vec(batch * f.width, 1.0)),
            _ => crate::Column::Ids(
                (0..batch * f.values_per_sample())
                    .map(|_| rng.below(f.vocab() as u64) as i64)
                    .collect(),
            ),
        })
        .collect()
}
