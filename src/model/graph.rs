//! The model graph, resolved from the metadata and checked for consistency (FORMAT.md §3.4–§3.7):
//! every reference in range, every width agreeing with the next, every parameter of the right shape.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use crate::error::{invalid, Result};
use crate::format::codes::{Activation, Mask, OutputCode, TowerActivation};
pub use crate::format::codes::{InputKind, NodeOp, Pooling, TowerInput};
use crate::format::{
    limits, DType, FeatureRecord, FileMeta, Header, LayerRecord, Layout, LevelRecord, NodeRecord,
    SourceRecord, TensorRecord, TowerRecord, NONE,
};

/// A tensor's place in the file, resolved to an absolute byte offset.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef {
    pub offset: usize,
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
}

/// An input feature with its table.
#[derive(Debug, Clone)]
pub struct Feature {
    pub name: Arc<str>,
    pub kind: InputKind,
    /// Floats this feature contributes to x0.
    pub width: usize,
    /// Ids per sample for sequences, 1 for sparse, 0 for dense.
    pub max_len: usize,
    pub table: Option<TensorRef>,
    pub pooling: Option<Pooling>,
    pub pad_id: Option<i64>,
    pub ids_through_f32: bool,
}

impl Feature {
    pub fn vocab(&self) -> usize {
        self.table.map_or(0, |t| t.rows)
    }
    /// Elements the caller passes per sample.
    pub fn values_per_sample(&self) -> usize {
        match self.kind {
            InputKind::Dense => self.width,
            InputKind::Sparse => 1,
            InputKind::Sequence => self.max_len,
        }
    }
}

/// An activation with its parameters resolved.
#[derive(Debug, Clone, Copy)]
pub enum Act {
    Identity,
    Relu,
    Sigmoid,
    Tanh,
    LeakyRelu(f32),
    /// `a` per channel (`per_channel`) or one scalar.
    PRelu {
        param: TensorRef,
        per_channel: bool,
    },
    /// Dice normalised per sample over the layer's outputs.
    DicePerSample {
        alpha: TensorRef,
        eps: f32,
    },
    /// Rows scale, shift, alpha, each `n` wide.
    DiceBn {
        param: TensorRef,
    },
    Softmax,
}

impl Act {
    /// The activation's code in the file.
    pub fn code(&self) -> Activation {
        match self {
            Act::Identity => Activation::Identity,
            Act::Relu => Activation::Relu,
            Act::Sigmoid => Activation::Sigmoid,
            Act::Tanh => Activation::Tanh,
            Act::LeakyRelu(_) => Activation::LeakyRelu,
            Act::PRelu { .. } => Activation::PRelu,
            Act::DicePerSample { .. } => Activation::DicePerSample,
            Act::DiceBn { .. } => Activation::DiceBn,
            Act::Softmax => Activation::Softmax,
        }
    }
    pub fn name(&self) -> &'static str {
        self.code().name()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Layer {
    pub k: usize,
    pub n: usize,
    pub weight: TensorRef,
    pub bias: Option<TensorRef>,
    pub act: Act,
    /// An int8 layer's input scales r (`[1, k]` f32, finite and > 0, checked at load): its
    /// quantizer reads `x_j·r_j` (format 1.2, FORMAT.md §3.9).
    pub input_scale: Option<TensorRef>,
}

#[derive(Debug, Clone)]
pub struct Mlp {
    pub layers: Vec<Layer>,
}

impl Mlp {
    pub fn in_width(&self) -> usize {
        self.layers[0].k
    }
    pub fn out_width(&self) -> usize {
        self.layers.last().expect("non-empty").n
    }
}

#[derive(Debug, Clone)]
pub struct Level {
    /// Experts per task (S).
    pub n_task_experts: usize,
    /// `task_experts[t]` are task t's S MLP indices.
    pub task_experts: Vec<Vec<usize>>,
    pub shared_experts: Vec<usize>,
    pub task_gates: Vec<usize>,
    pub shared_gate: Option<usize>,
    /// Output width of every expert of this level.
    pub width: usize,
}

/// A value of the structure that a graph node or a tower reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    X0,
    Bottom,
    /// Task t's output of the last level.
    Level(usize),
    /// Node i's output.
    Node(usize),
}

/// What a graph node computes (FORMAT.md §3.10).
#[derive(Debug, Clone, Copy)]
pub enum NodeKind {
    /// One MLP over the node's single input.
    Mlp(usize),
    /// Per input j: `q_j = query(x_j)`, `k_j = key(x_j)`, `v_j = value(x_j)`;
    /// `out = Σ_j softmax_j(q_j·k_j / temperature)·v_j`.
    Attention {
        query: usize,
        key: usize,
        value: usize,
        temperature: f32,
    },
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    pub inputs: Vec<Source>,
    /// Output width.
    pub width: usize,
}

#[derive(Debug, Clone)]
pub struct Tower {
    pub mlp: usize,
    pub input: Source,
    pub sigmoid: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum OutputKind {
    Tower(usize),
    Product(usize, usize),
}

#[derive(Debug, Clone)]
pub struct Output {
    pub name: Arc<str>,
    pub kind: OutputKind,
    pub width: usize,
}

/// The whole model, validated.
#[derive(Debug, Clone)]
pub struct Graph {
    pub name: Arc<str>,
    pub features: Vec<Feature>,
    /// Feature indices in x0 concatenation order.
    pub x0_order: Vec<usize>,
    pub x0_width: usize,
    pub mlps: Vec<Mlp>,
    pub bottom: Option<usize>,
    pub n_tasks: usize,
    pub levels: Vec<Level>,
    /// Graph nodes (format 1.3), each reading only values before it.
    pub nodes: Vec<Node>,
    pub towers: Vec<Tower>,
    pub outputs: Vec<Output>,
    /// Weight dtype of the dense layers (`None` if mixed).
    pub weight_dtype: Option<DType>,
}

impl Graph {
    /// Resolves and checks the graph, section by section: features and their concatenation
    /// order, MLPs, then the structure (bottom, levels, towers) and the outputs.
    pub fn from_meta(h: &Header, m: &FileMeta) -> Result<Graph> {
        let r = Resolver {
            h,
            m,
            referenced: RefCell::new(vec![false; m.tensors.len()]),
        };
        let features = r.features()?;
        let (x0_order, x0_width) = x0_order(&m.x0_order, &features)?;
        let mut mlps = (m.mlps.iter().enumerate())
            .map(|(i, layers)| r.mlp(i, layers))
            .collect::<Result<Vec<_>>>()?;
        r.input_scales(&mut mlps)?;

        let mut s = Structure {
            mlps: &mlps,
            used: vec![false; mlps.len()],
        };
        let bottom = opt(m.bottom)
            .map(|b| s.claim_reading(b, "the bottom MLP", x0_width))
            .transpose()?;
        let trunk = bottom.map_or(x0_width, |b| mlps[b].out_width());
        let n_tasks = m.n_tasks as usize;
        let levels = s.levels(&m.levels, n_tasks, trunk)?;
        let mut values = Values {
            x0: x0_width,
            bottom: bottom.map(|_| trunk),
            last_level: levels.last().map(|l| l.width),
            n_tasks,
            nodes: Vec::with_capacity(m.nodes.len()),
            read: vec![false; m.nodes.len()],
        };
        let nodes = (m.nodes.iter().enumerate())
            .map(|(i, rec)| s.node(i, rec, &mut values))
            .collect::<Result<Vec<_>>>()?;
        let towers = (m.towers.iter().enumerate())
            .map(|(i, rec)| {
                let node = m.tower_nodes.get(i).copied().unwrap_or(NONE);
                s.tower(i, rec, node, &mut values)
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(unread) = values.read.iter().position(|r| !r) {
            return Err(invalid!(
                "node {unread} is not read by a later node or a tower"
            ));
        }
        if let Some(unused) = s.used.iter().position(|u| !u) {
            return Err(invalid!("MLP {unused} is not used by the structure"));
        }
        r.all_referenced()?;
        let outputs = r.outputs(&towers, &mlps)?;

        Ok(Graph {
            name: r.name(m.model_name).into(),
            features,
            x0_order,
            x0_width,
            weight_dtype: common_weight_dtype(&mlps),
            mlps,
            bottom,
            n_tasks,
            levels,
            nodes,
            towers,
            outputs,
        })
    }
}

fn opt(idx: u32) -> Option<u32> {
    (idx != NONE).then_some(idx)
}

/// The concatenation order (a permutation of the features) and x0's width.
fn x0_order(order: &[u32], features: &[Feature]) -> Result<(Vec<usize>, usize)> {
    if order.len() != features.len() {
        return Err(invalid!(
            "the concatenation order lists {} features, the model has {}",
            order.len(),
            features.len()
        ));
    }
    let mut seen = vec![false; features.len()];
    let mut x0_width = 0usize;
    let order = (order.iter())
        .map(|&f| {
            let f = f as usize;
            if f >= features.len() || std::mem::replace(&mut seen[f], true) {
                return Err(invalid!(
                    "the concatenation order is not a permutation of the features (entry {f})"
                ));
            }
            x0_width += features[f].width;
            Ok(f)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((order, x0_width))
}

/// The dtype of every dense-layer weight, or `None` if they differ.
fn common_weight_dtype(mlps: &[Mlp]) -> Option<DType> {
    let mut dtypes = mlps.iter().flat_map(|m| &m.layers).map(|l| l.weight.dtype);
    let first = dtypes.next()?;
    dtypes.all(|d| d == first).then_some(first)
}

/// Resolves records to tensors and names, remembering which tensors something refers to.
struct Resolver<'a> {
    h: &'a Header,
    m: &'a FileMeta,
    /// A tensor nothing uses is hidden data and an error.
    referenced: RefCell<Vec<bool>>,
}

impl Resolver<'_> {
    fn name(&self, idx: u32) -> &str {
        &self.m.strings[idx as usize]
    }

    fn tensor(&self, idx: u32, what: &str) -> Result<(&TensorRecord, TensorRef)> {
        let t = self.m.tensors.get(idx as usize).ok_or_else(|| {
            invalid!(
                "{what} names tensor {idx}, but the file has {} tensors",
                self.m.tensors.len()
            )
        })?;
        self.referenced.borrow_mut()[idx as usize] = true;
        let r = TensorRef {
            offset: (self.h.data_offset + t.offset) as usize,
            dtype: t.dtype,
            rows: t.rows as usize,
            cols: t.cols as usize,
        };
        Ok((t, r))
    }

    /// A plain f32 tensor of exactly `rows × cols`.
    fn f32_plain(&self, idx: u32, rows: usize, cols: usize, what: &str) -> Result<TensorRef> {
        let (t, r) = self.tensor(idx, what)?;
        if t.dtype != DType::F32 || t.layout != Layout::Plain || r.rows != rows || r.cols != cols {
            return Err(invalid!(
                "{what}: tensor '{}' is {}x{} {} {}, expected plain f32 {rows}x{cols}",
                self.name(t.name),
                r.rows,
                r.cols,
                t.dtype.name(),
                t.layout.name()
            ));
        }
        Ok(r)
    }

    fn all_referenced(&self) -> Result<()> {
        match self.referenced.borrow().iter().position(|r| !r) {
            Some(t) => Err(invalid!(
                "tensor {t} '{}' is not used by the graph (no unreferenced data is allowed)",
                self.name(self.m.tensors[t].name)
            )),
            None => Ok(()),
        }
    }

    fn features(&self) -> Result<Vec<Feature>> {
        if self.m.features.is_empty() {
            return Err(invalid!("the model has no input features"));
        }
        let mut names = HashSet::new();
        (self.m.features.iter().enumerate())
            .map(|(i, f)| {
                let name: Arc<str> = self.name(f.name).into();
                let what = format!("feature {i} '{name}'");
                if !names.insert(name.clone()) {
                    return Err(invalid!("{what}: duplicate feature name"));
                }
                self.feature(f, name, &what)
            })
            .collect()
    }

    fn feature(&self, f: &FeatureRecord, name: Arc<str>, what: &str) -> Result<Feature> {
        if f.width == 0 || f.width > limits::DENSE_WIDTH {
            return Err(invalid!("{what}: width {} out of range", f.width));
        }
        let mut feature = Feature {
            name,
            kind: f.kind,
            width: f.width as usize,
            max_len: 0,
            table: None,
            pooling: None,
            pad_id: None,
            ids_through_f32: f.ids_through_f32,
        };
        let no_sequence_fields =
            f.pooling.is_none() && f.mask == Mask::None && f.max_len == 0 && f.pad_id == 0;
        match f.kind {
            InputKind::Dense => {
                if !no_sequence_fields || f.ids_through_f32 || f.table != NONE {
                    return Err(invalid!("{what}: a dense feature has no pooling, mask, flags, max_len, table or pad id"));
                }
            }
            InputKind::Sparse => {
                feature.table = self.optional_table(f, what)?;
                if !no_sequence_fields {
                    return Err(invalid!(
                        "{what}: a sparse feature has no pooling, mask, max_len or pad id"
                    ));
                }
                feature.max_len = 1;
            }
            InputKind::Sequence => {
                feature.table = self.optional_table(f, what)?;
                if f.max_len == 0 || f.max_len > limits::MAX_LEN {
                    return Err(invalid!(
                        "{what}: max_len {} out of range 1..={}",
                        f.max_len,
                        limits::MAX_LEN
                    ));
                }
                feature.max_len = f.max_len as usize;
                feature.pooling = Some(f.pooling.ok_or_else(|| {
                    invalid!("{what}: a sequence feature needs a pooling, the file stores 0 (none)")
                })?);
                feature.pad_id = match f.mask {
                    Mask::None if f.pad_id != 0 => {
                        return Err(invalid!("{what}: pad id without a pad-id mask"))
                    }
                    Mask::None => None,
                    Mask::PadId => Some(f.pad_id),
                };
            }
        }
        Ok(feature)
    }

    /// The embedding table of a sparse or sequence feature, or `None` for a feature whose vectors
    /// the caller passes (table NONE, flagged so: checked by the metadata parser).
    fn optional_table(&self, f: &FeatureRecord, what: &str) -> Result<Option<TensorRef>> {
        if f.table == NONE {
            return Ok(None);
        }
        self.table(f, what).map(Some)
    }

    /// The embedding table of a sparse or sequence feature: plain `[vocab, width]`.
    fn table(&self, f: &FeatureRecord, what: &str) -> Result<TensorRef> {
        let (t, r) = self.tensor(f.table, what)?;
        if t.layout != Layout::Plain || r.cols != f.width as usize {
            return Err(invalid!(
                "{what}: table '{}' must be plain [vocab, {}], it is {}x{} {}",
                self.name(t.name),
                f.width,
                r.rows,
                r.cols,
                t.layout.name()
            ));
        }
        Ok(r)
    }

    fn mlp(&self, i: usize, records: &[LayerRecord]) -> Result<Mlp> {
        let mut layers: Vec<Layer> = Vec::with_capacity(records.len());
        for (j, l) in records.iter().enumerate() {
            let prev = layers.last().map(|p| p.n);
            layers.push(self.layer(l, &format!("MLP {i} layer {j}"), prev)?);
        }
        Ok(Mlp { layers })
    }

    /// Attaches the input-scales section's tensors to their layers: each names an existing
    /// int8 layer at most once, and is a plain f32 `[1, k]` (its values are checked at load).
    fn input_scales(&self, mlps: &mut [Mlp]) -> Result<()> {
        for (i, rec) in self.m.input_scales.iter().enumerate() {
            let what = format!("input scale {i} (MLP {} layer {})", rec.mlp, rec.layer);
            let layer = (mlps.get_mut(rec.mlp as usize))
                .and_then(|m| m.layers.get_mut(rec.layer as usize))
                .ok_or_else(|| invalid!("{what}: no such layer"))?;
            if layer.weight.dtype != DType::I8 {
                return Err(invalid!(
                    "{what}: the layer is {}; input scales are for i8 layers only",
                    layer.weight.dtype.name()
                ));
            }
            if layer.input_scale.is_some() {
                return Err(invalid!("{what}: the layer has input scales already"));
            }
            layer.input_scale = Some(self.f32_plain(rec.tensor, 1, layer.k, &what)?);
        }
        Ok(())
    }

    /// One layer; `prev` is the previous layer's output width, which must be this one's input.
    fn layer(&self, l: &LayerRecord, what: &str, prev: Option<usize>) -> Result<Layer> {
        let (t, weight) = self.tensor(l.weight, what)?;
        if !matches!(t.layout, Layout::Panel16 | Layout::Panel16x4) {
            return Err(invalid!(
                "{what}: weight '{}' must use the panel16 or panel16x4 layout",
                self.name(t.name)
            ));
        }
        let (k, n) = (weight.rows, weight.cols);
        if t.dtype == DType::I8 && k > crate::kernels::int8::MAX_K {
            return Err(invalid!(
                "{what}: i8 weight '{}' has {k} inputs, over the int8 limit of {}",
                self.name(t.name),
                crate::kernels::int8::MAX_K
            ));
        }
        if let Some(p) = prev.filter(|&p| p != k) {
            return Err(invalid!(
                "{what}: weight '{}' has {k} inputs, but the previous layer outputs {p}",
                self.name(t.name)
            ));
        }
        let bias = opt(l.bias)
            .map(|b| self.f32_plain(b, 1, n, what))
            .transpose()?;
        Ok(Layer {
            k,
            n,
            weight,
            bias,
            act: self.act(l, what, n)?,
            input_scale: None,
        })
    }

    /// A layer's activation with its parameters checked (FORMAT.md §3.6).
    fn act(&self, l: &LayerRecord, what: &str, n: usize) -> Result<Act> {
        let no_param = |act: Act| -> Result<Act> {
            if l.act_param != NONE || l.act_scalar != 0.0 {
                return Err(invalid!(
                    "{what}: activation {} takes no parameters",
                    act.name()
                ));
            }
            Ok(act)
        };
        Ok(match l.act {
            Activation::Identity => no_param(Act::Identity)?,
            Activation::Relu => no_param(Act::Relu)?,
            Activation::Sigmoid => no_param(Act::Sigmoid)?,
            Activation::Tanh => no_param(Act::Tanh)?,
            Activation::Softmax => no_param(Act::Softmax)?,
            Activation::LeakyRelu => {
                if l.act_param != NONE || !l.act_scalar.is_finite() {
                    return Err(invalid!(
                        "{what}: leaky relu needs a finite slope and no tensor"
                    ));
                }
                Act::LeakyRelu(l.act_scalar)
            }
            Activation::PRelu => {
                let (t, r) = self.tensor(l.act_param, what)?;
                if t.dtype != DType::F32
                    || t.layout != Layout::Plain
                    || r.rows != 1
                    || !(r.cols == 1 || r.cols == n)
                    || l.act_scalar != 0.0
                {
                    return Err(invalid!(
                        "{what}: PReLU weight must be plain f32 [1,1] or [1,{n}]"
                    ));
                }
                Act::PRelu {
                    param: r,
                    per_channel: r.cols == n && n != 1,
                }
            }
            Activation::DicePerSample => {
                let alpha = self.f32_plain(l.act_param, 1, 1, what)?;
                if !(l.act_scalar.is_finite() && l.act_scalar > 0.0) {
                    return Err(invalid!("{what}: Dice eps must be positive and finite"));
                }
                Act::DicePerSample {
                    alpha,
                    eps: l.act_scalar,
                }
            }
            Activation::DiceBn => {
                if l.act_scalar != 0.0 {
                    return Err(invalid!("{what}: Dice (BatchNorm form) takes no scalar"));
                }
                Act::DiceBn {
                    param: self.f32_plain(l.act_param, 3, n, what)?,
                }
            }
        })
    }

    fn outputs(&self, towers: &[Tower], mlps: &[Mlp]) -> Result<Vec<Output>> {
        let mut names = HashSet::new();
        let width_of = |tower: usize| mlps[towers[tower].mlp].out_width();
        (self.m.outputs.iter().enumerate())
            .map(|(i, rec)| {
                let name: Arc<str> = self.name(rec.name).into();
                if !names.insert(name.clone()) {
                    return Err(invalid!("output {i}: duplicate output name '{name}'"));
                }
                let what = format!("output {i} '{name}'");
                let tower = |idx: u32| -> Result<usize> {
                    if (idx as usize) < towers.len() {
                        Ok(idx as usize)
                    } else {
                        Err(invalid!(
                            "{what} names tower {idx}, but there are {}",
                            towers.len()
                        ))
                    }
                };
                let (kind, width) = match (rec.kind, opt(rec.b)) {
                    (OutputCode::Tower, None) => {
                        let a = tower(rec.a)?;
                        (OutputKind::Tower(a), width_of(a))
                    }
                    (OutputCode::Tower, Some(_)) => {
                        return Err(invalid!("{what}: a tower output must have b = NONE"))
                    }
                    (OutputCode::Product, _) => {
                        let (a, b) = (tower(rec.a)?, tower(rec.b)?);
                        if width_of(a) != width_of(b) {
                            return Err(invalid!("{what} multiplies towers of different widths"));
                        }
                        (OutputKind::Product(a, b), width_of(a))
                    }
                };
                Ok(Output { name, kind, width })
            })
            .collect()
    }
}

/// Hands the MLPs out to their places in the structure, each exactly once (no parameters
/// aliased by accident), checking that each reads the width its input has.
struct Structure<'g> {
    mlps: &'g [Mlp],
    used: Vec<bool>,
}

/// The values a node or a tower may read, with their widths: x0, the bottom's output, the last
/// level's task outputs, the nodes resolved so far; and which nodes something has read.
struct Values {
    x0: usize,
    bottom: Option<usize>,
    last_level: Option<usize>,
    n_tasks: usize,
    /// Widths of the nodes resolved so far.
    nodes: Vec<usize>,
    read: Vec<bool>,
}

impl Values {
    /// Resolves a reference to a value that exists by now; returns it with its width.
    fn resolve(&mut self, r: SourceRecord, what: &str) -> Result<(Source, usize)> {
        let index = r.index as usize;
        if !matches!(r.source, TowerInput::LastLevel | TowerInput::Node) && r.index != 0 {
            return Err(invalid!(
                "{what} reads {} with index {index}, which must be 0",
                r.source.name()
            ));
        }
        Ok(match r.source {
            TowerInput::X0 => (Source::X0, self.x0),
            TowerInput::Bottom => (
                Source::Bottom,
                self.bottom
                    .ok_or_else(|| invalid!("{what} reads the bottom, but there is none"))?,
            ),
            TowerInput::LastLevel => {
                let width = self.last_level.ok_or_else(|| {
                    invalid!("{what} reads the last level, but there are no levels")
                })?;
                if index >= self.n_tasks {
                    return Err(invalid!(
                        "{what} reads task {index}'s level output, but there are {} tasks",
                        self.n_tasks
                    ));
                }
                (Source::Level(index), width)
            }
            TowerInput::Node => {
                let Some(&width) = self.nodes.get(index) else {
                    return Err(invalid!(
                        "{what} reads node {index}, but only nodes 0..{} come before it \
                         (a node reads earlier nodes only)",
                        self.nodes.len()
                    ));
                };
                self.read[index] = true;
                (Source::Node(index), width)
            }
        })
    }
}

impl Structure<'_> {
    fn claim_reading(&mut self, idx: u32, what: &str, in_width: usize) -> Result<usize> {
        let i = idx as usize;
        let Some(used) = self.used.get_mut(i) else {
            return Err(invalid!(
                "{what} names MLP {idx}, but there are {}",
                self.used.len()
            ));
        };
        if std::mem::replace(used, true) {
            return Err(invalid!("{what} reuses MLP {idx}, which is used elsewhere"));
        }
        let reads = self.mlps[i].in_width();
        if reads != in_width {
            return Err(invalid!(
                "{what} reads {reads} values, but its input has {in_width}"
            ));
        }
        Ok(i)
    }

    fn levels(&mut self, recs: &[LevelRecord], t: usize, trunk: usize) -> Result<Vec<Level>> {
        let mut levels: Vec<Level> = Vec::with_capacity(recs.len());
        for (l, rec) in recs.iter().enumerate() {
            let in_width = levels.last().map_or(trunk, |prev| prev.width);
            let last = l + 1 == recs.len();
            levels.push(self.level(l, rec, t, in_width, last)?);
        }
        Ok(levels)
    }

    fn level(
        &mut self,
        l: usize,
        rec: &LevelRecord,
        t: usize,
        in_width: usize,
        last: bool,
    ) -> Result<Level> {
        let (s, sh) = (rec.n_task_experts as usize, rec.n_shared as usize);
        if s + sh == 0 {
            return Err(invalid!("level {l} has no experts"));
        }
        let mut width = None;
        let task_experts = (0..t)
            .map(|task| {
                (0..s)
                    .map(|j| {
                        let what = format!("level {l} task {task} expert {j}");
                        self.expert(rec.task_experts[task * s + j], &what, in_width, &mut width)
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let shared_experts = (rec.shared_experts.iter().enumerate())
            .map(|(j, &idx)| {
                let what = format!("level {l} shared expert {j}");
                self.expert(idx, &what, in_width, &mut width)
            })
            .collect::<Result<Vec<_>>>()?;
        let task_gates = (rec.task_gates.iter().enumerate())
            .map(|(task, &idx)| {
                self.gate(
                    idx,
                    &format!("level {l} gate of task {task}"),
                    in_width,
                    s + sh,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let shared_gate = match (opt(rec.shared_gate), last) {
            (Some(g), false) => {
                Some(self.gate(g, &format!("level {l} shared gate"), in_width, t * s + sh)?)
            }
            (None, false) => {
                return Err(invalid!(
                    "level {l} is not the last level but has no shared gate"
                ))
            }
            (Some(_), true) => {
                return Err(invalid!(
                    "the last level ({l}) has a shared gate; nothing reads it (exporters drop it)"
                ))
            }
            (None, true) => None,
        };
        Ok(Level {
            n_task_experts: s,
            task_experts,
            shared_experts,
            task_gates,
            shared_gate,
            width: width.expect("at least one expert"),
        })
    }

    /// An expert; every expert of a level has the level's output `width` (the first one sets it).
    fn expert(
        &mut self,
        idx: u32,
        what: &str,
        in_width: usize,
        width: &mut Option<usize>,
    ) -> Result<usize> {
        let e = self.claim_reading(idx, what, in_width)?;
        let out = self.mlps[e].out_width();
        match *width {
            Some(w) if w != out => Err(invalid!(
                "{what} outputs {out} values, but the level's other experts output {w}"
            )),
            _ => {
                *width = Some(out);
                Ok(e)
            }
        }
    }

    /// A gate: logits (its last activation identity) over the `n` experts it mixes.
    fn gate(&mut self, idx: u32, what: &str, in_width: usize, n: usize) -> Result<usize> {
        let g = self.claim_reading(idx, what, in_width)?;
        let mlp = &self.mlps[g];
        if mlp.out_width() != n {
            return Err(invalid!(
                "{what} outputs {} weights, but it mixes {n} experts",
                mlp.out_width()
            ));
        }
        if !matches!(mlp.layers.last().expect("non-empty").act, Act::Identity) {
            return Err(invalid!(
                "{what} must end in logits (identity activation); the softmax is part of the gate"
            ));
        }
        Ok(g)
    }

    /// Tower `i`; `node` is its entry in the node section's tower list (`NONE` in files
    /// without one).
    fn tower(
        &mut self,
        i: usize,
        rec: &TowerRecord,
        node: u32,
        values: &mut Values,
    ) -> Result<Tower> {
        let what = format!("tower {i}");
        let index = match rec.input {
            TowerInput::LastLevel => i as u32,
            TowerInput::Node => node,
            _ => 0,
        };
        if (rec.input == TowerInput::Node) != (node != NONE) {
            return Err(invalid!(
                "{what} reads {} but its node entry is {}",
                rec.input.name(),
                if node == NONE {
                    "NONE".to_string()
                } else {
                    node.to_string()
                }
            ));
        }
        let source = SourceRecord {
            source: rec.input,
            index,
        };
        let (input, width) = values.resolve(source, &what)?;
        Ok(Tower {
            mlp: self.claim_reading(rec.mlp, &what, width)?,
            input,
            sigmoid: rec.out_act == TowerActivation::Sigmoid,
        })
    }

    /// Graph node `i`: its inputs exist and agree in width, its MLPs read that width.
    fn node(&mut self, i: usize, rec: &NodeRecord, values: &mut Values) -> Result<Node> {
        let what = format!("node {i} ({})", rec.op.name());
        let mut inputs = Vec::with_capacity(rec.inputs.len());
        let mut in_width = None;
        for (j, &r) in rec.inputs.iter().enumerate() {
            let (source, width) = values.resolve(r, &format!("{what} input {j}"))?;
            if in_width.is_some_and(|w| w != width) {
                return Err(invalid!(
                    "{what} input {j} is {width} wide, but its first input is {} wide",
                    in_width.unwrap_or(0)
                ));
            }
            in_width = Some(width);
            inputs.push(source);
        }
        let in_width = in_width.expect("a node has at least one input (parser)");
        let (kind, width) = match rec.op {
            NodeOp::Mlp => {
                if rec.temperature.to_bits() != 0 {
                    return Err(invalid!("{what}: the scalar field must be 0"));
                }
                let m = self.claim_reading(rec.mlps[0], &what, in_width)?;
                (NodeKind::Mlp(m), self.mlps[m].out_width())
            }
            NodeOp::Attention => {
                let t = rec.temperature;
                if !(t.is_finite() && t > 0.0) {
                    return Err(invalid!(
                        "{what}: temperature {t} must be finite and positive"
                    ));
                }
                let query = self.claim_reading(rec.mlps[0], &format!("{what} query"), in_width)?;
                let key = self.claim_reading(rec.mlps[1], &format!("{what} key"), in_width)?;
                let value = self.claim_reading(rec.mlps[2], &format!("{what} value"), in_width)?;
                let (dq, dk) = (self.mlps[query].out_width(), self.mlps[key].out_width());
                if dq != dk {
                    return Err(invalid!(
                        "{what}: queries are {dq} wide but keys {dk}; their dot product needs equal widths"
                    ));
                }
                let kind = NodeKind::Attention {
                    query,
                    key,
                    value,
                    temperature: t,
                };
                (kind, self.mlps[value].out_width())
            }
        };
        values.nodes.push(width);
        Ok(Node {
            kind,
            inputs,
            width,
        })
    }
}
