//! The model graph, resolved from the metadata and checked for consistency (FORMAT.md §3.4–§3.7):
//! every reference in range, every width agreeing with the next, every parameter of the right shape.

use std::sync::Arc;

use crate::error::{invalid, Result};
use crate::format::{limits, DType, FileMeta, Header, Layout, TensorRecord, NONE};

/// What a caller passes for one input feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// `width` floats per sample.
    Dense,
    /// One id per sample, looked up in an embedding table.
    Sparse,
    /// `max_len` ids per sample, looked up and pooled.
    Sequence,
}

impl InputKind {
    pub fn name(self) -> &'static str {
        match self {
            InputKind::Dense => "dense",
            InputKind::Sparse => "sparse",
            InputKind::Sequence => "sequence",
        }
    }
}

/// How a sequence feature's embeddings are reduced to one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Sum,
    Mean,
    Max,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Sum => "sum",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
        }
    }
}

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
    DiceRechub {
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
    pub fn name(&self) -> &'static str {
        match self {
            Act::Identity => "identity",
            Act::Relu => "relu",
            Act::Sigmoid => "sigmoid",
            Act::Tanh => "tanh",
            Act::LeakyRelu(_) => "leaky_relu",
            Act::PRelu { .. } => "prelu",
            Act::DiceRechub { .. } => "dice",
            Act::DiceBn { .. } => "dice_bn",
            Act::Softmax => "softmax",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Layer {
    pub k: usize,
    pub n: usize,
    pub weight: TensorRef,
    pub bias: Option<TensorRef>,
    pub act: Act,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TowerInput {
    X0,
    Bottom,
    LastLevel,
}

#[derive(Debug, Clone)]
pub struct Tower {
    pub mlp: usize,
    pub input: TowerInput,
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
    pub towers: Vec<Tower>,
    pub outputs: Vec<Output>,
    /// Weight dtype of the dense layers (`None` if mixed).
    pub weight_dtype: Option<DType>,
}

impl Graph {
    pub fn from_meta(h: &Header, m: &FileMeta) -> Result<Graph> {
        Resolver {
            h,
            m,
            referenced: std::cell::RefCell::new(vec![false; m.tensors.len()]),
        }
        .resolve()
    }

    /// The width of the vector the levels (or towers) start from.
    pub fn trunk_width(&self) -> usize {
        self.bottom
            .map_or(self.x0_width, |b| self.mlps[b].out_width())
    }
}

struct Resolver<'a> {
    h: &'a Header,
    m: &'a FileMeta,
    /// Which tensors something refers to; a tensor nothing uses is hidden data and an error.
    referenced: std::cell::RefCell<Vec<bool>>,
}

fn opt(idx: u32) -> Option<u32> {
    (idx != NONE).then_some(idx)
}

impl Resolver<'_> {
    fn name(&self, idx: u32) -> &str {
        &self.m.strings[idx as usize]
    }

    fn tensor(&self, idx: u32, what: &dyn Fn() -> String) -> Result<(&TensorRecord, TensorRef)> {
        let t = self.m.tensors.get(idx as usize).ok_or_else(|| {
            invalid!(
                "{} names tensor {idx}, but the file has {} tensors",
                what(),
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
    fn f32_plain(
        &self,
        idx: u32,
        rows: usize,
        cols: usize,
        what: &dyn Fn() -> String,
    ) -> Result<TensorRef> {
        let (t, r) = self.tensor(idx, what)?;
        if t.dtype != DType::F32 || t.layout != Layout::Plain || r.rows != rows || r.cols != cols {
            return Err(invalid!(
                "{}: tensor '{}' is {}x{} {} {}, expected plain f32 {rows}x{cols}",
                what(),
                self.name(t.name),
                r.rows,
                r.cols,
                t.dtype.name(),
                t.layout.name()
            ));
        }
        Ok(r)
    }

    fn resolve(&self) -> Result<Graph> {
        let m = self.m;
        let features = self.features()?;

        // x0 order: a permutation of the features.
        if m.x0_order.len() != features.len() {
            return Err(invalid!(
                "the concatenation order lists {} features, the model has {}",
                m.x0_order.len(),
                features.len()
            ));
        }
        let mut seen = vec![false; features.len()];
        let mut x0_order = Vec::with_capacity(features.len());
        let mut x0_width = 0usize;
        for &f in &m.x0_order {
            let f = f as usize;
            if f >= features.len() || std::mem::replace(&mut seen[f], true) {
                return Err(invalid!(
                    "the concatenation order is not a permutation of the features (entry {f})"
                ));
            }
            x0_order.push(f);
            x0_width += features[f].width;
        }

        let mut weight_dtypes = (false, false);
        let mut mlps = Vec::with_capacity(m.mlps.len());
        for (i, layers) in m.mlps.iter().enumerate() {
            mlps.push(self.mlp(i, layers, &mut weight_dtypes)?);
        }
        let weight_dtype = match weight_dtypes {
            (true, false) => Some(DType::F32),
            (false, true) => Some(DType::F16),
            _ => None,
        };

        // Each MLP belongs to exactly one place in the structure.
        let mut used = vec![false; mlps.len()];
        let mut claim = |idx: u32, what: &dyn Fn() -> String| -> Result<usize> {
            let i = idx as usize;
            if i >= used.len() {
                return Err(invalid!(
                    "{} names MLP {idx}, but there are {}",
                    what(),
                    used.len()
                ));
            }
            if std::mem::replace(&mut used[i], true) {
                return Err(invalid!(
                    "{} reuses MLP {idx}, which is used elsewhere",
                    what()
                ));
            }
            Ok(i)
        };

        let bottom = match opt(m.bottom) {
            Some(b) => {
                let b = claim(b, &|| "the bottom".into())?;
                if mlps[b].in_width() != x0_width {
                    return Err(invalid!(
                        "the bottom MLP reads {} values, but x0 has {x0_width}",
                        mlps[b].in_width()
                    ));
                }
                Some(b)
            }
            None => None,
        };
        let trunk = bottom.map_or(x0_width, |b| mlps[b].out_width());

        let t = m.n_tasks as usize;
        let mut levels = Vec::with_capacity(m.levels.len());
        let mut in_width = trunk;
        for (l, rec) in m.levels.iter().enumerate() {
            let last = l + 1 == m.levels.len();
            let s = rec.n_task_experts as usize;
            let sh = rec.n_shared as usize;
            if s + sh == 0 {
                return Err(invalid!("level {l} has no experts"));
            }
            let mut width = None;
            let mut check_expert = |e: usize, what: &str| -> Result<()> {
                let mlp = &mlps[e];
                if mlp.in_width() != in_width {
                    return Err(invalid!(
                        "{what} reads {} values, but its input has {in_width}",
                        mlp.in_width()
                    ));
                }
                match width {
                    None => width = Some(mlp.out_width()),
                    Some(w) if w != mlp.out_width() => {
                        return Err(invalid!(
                            "{what} outputs {} values, but the level's other experts output {w}",
                            mlp.out_width()
                        ))
                    }
                    _ => {}
                }
                Ok(())
            };
            let mut task_experts = Vec::with_capacity(t);
            for task in 0..t {
                let mut v = Vec::with_capacity(s);
                for j in 0..s {
                    let what = format!("level {l} task {task} expert {j}");
                    let e = claim(rec.task_experts[task * s + j], &|| what.clone())?;
                    check_expert(e, &what)?;
                    v.push(e);
                }
                task_experts.push(v);
            }
            let mut shared_experts = Vec::with_capacity(sh);
            for (j, &idx) in rec.shared_experts.iter().enumerate() {
                let what = format!("level {l} shared expert {j}");
                let e = claim(idx, &|| what.clone())?;
                check_expert(e, &what)?;
                shared_experts.push(e);
            }
            let width = width.expect("at least one expert");

            let mut gate = |idx: u32, what: String, n: usize| -> Result<usize> {
                let g = claim(idx, &|| what.clone())?;
                let mlp = &mlps[g];
                if mlp.in_width() != in_width {
                    return Err(invalid!(
                        "{what} reads {} values, but its input has {in_width}",
                        mlp.in_width()
                    ));
                }
                if mlp.out_width() != n {
                    return Err(invalid!(
                        "{what} outputs {} weights, but it mixes {n} experts",
                        mlp.out_width()
                    ));
                }
                if !matches!(mlp.layers.last().expect("non-empty").act, Act::Identity) {
                    return Err(invalid!("{what} must end in logits (identity activation); the softmax is part of the gate"));
                }
                Ok(g)
            };
            let mut task_gates = Vec::with_capacity(t);
            for (task, &idx) in rec.task_gates.iter().enumerate() {
                task_gates.push(gate(idx, format!("level {l} gate of task {task}"), s + sh)?);
            }
            let shared_gate = match (opt(rec.shared_gate), last) {
                (Some(g), false) => Some(gate(g, format!("level {l} shared gate"), t * s + sh)?),
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
            levels.push(Level {
                n_task_experts: s,
                task_experts,
                shared_experts,
                task_gates,
                shared_gate,
                width,
            });
            in_width = width;
        }

        let mut towers = Vec::with_capacity(t);
        for (i, rec) in m.towers.iter().enumerate() {
            let what = format!("tower {i}");
            let mlp = claim(rec.mlp, &|| what.clone())?;
            let (input, width) = match rec.input {
                0 => (TowerInput::X0, x0_width),
                1 if bottom.is_some() => (TowerInput::Bottom, trunk),
                2 if !levels.is_empty() => (TowerInput::LastLevel, in_width),
                1 => return Err(invalid!("{what} reads the bottom, but there is none")),
                2 => {
                    return Err(invalid!(
                        "{what} reads the last level, but there are no levels"
                    ))
                }
                c => return Err(invalid!("{what}: unknown input code {c}")),
            };
            if mlps[mlp].in_width() != width {
                return Err(invalid!(
                    "{what} reads {} values, but its input has {width}",
                    mlps[mlp].in_width()
                ));
            }
            let sigmoid = match rec.out_act {
                0 => false,
                2 => true,
                c => {
                    return Err(invalid!(
                        "{what}: output activation code {c} (must be 0 identity or 2 sigmoid)"
                    ))
                }
            };
            towers.push(Tower {
                mlp,
                input,
                sigmoid,
            });
        }
        if let Some(unused) = used.iter().position(|u| !u) {
            return Err(invalid!("MLP {unused} is not used by the structure"));
        }
        if let Some(t) = self.referenced.borrow().iter().position(|r| !r) {
            return Err(invalid!(
                "tensor {t} '{}' is not used by the graph (no unreferenced data is allowed)",
                self.name(self.m.tensors[t].name)
            ));
        }

        let mut outputs = Vec::with_capacity(m.outputs.len());
        let mut out_names = std::collections::HashSet::new();
        for (i, rec) in m.outputs.iter().enumerate() {
            let name: Arc<str> = self.name(rec.name).into();
            if !out_names.insert(name.clone()) {
                return Err(invalid!("output {i}: duplicate output name '{name}'"));
            }
            let tower = |idx: u32| -> Result<usize> {
                if (idx as usize) < towers.len() {
                    Ok(idx as usize)
                } else {
                    Err(invalid!(
                        "output {i} '{name}' names tower {idx}, but there are {t}"
                    ))
                }
            };
            let width_of = |tw: usize| mlps[towers[tw].mlp].out_width();
            let (kind, width) = match rec.kind {
                0 if rec.b == NONE => {
                    let a = tower(rec.a)?;
                    (OutputKind::Tower(a), width_of(a))
                }
                1 => {
                    let (a, b) = (tower(rec.a)?, tower(rec.b)?);
                    if width_of(a) != width_of(b) {
                        return Err(invalid!(
                            "output {i} '{name}' multiplies towers of different widths"
                        ));
                    }
                    (OutputKind::Product(a, b), width_of(a))
                }
                0 => {
                    return Err(invalid!(
                        "output {i} '{name}': a tower output must have b = NONE"
                    ))
                }
                k => return Err(invalid!("output {i} '{name}': unknown output kind {k}")),
            };
            outputs.push(Output { name, kind, width });
        }

        Ok(Graph {
            name: self.name(m.model_name).into(),
            features,
            x0_order,
            x0_width,
            mlps,
            bottom,
            n_tasks: t,
            levels,
            towers,
            outputs,
            weight_dtype,
        })
    }

    fn features(&self) -> Result<Vec<Feature>> {
        let mut out = Vec::with_capacity(self.m.features.len());
        let mut names = std::collections::HashSet::new();
        if self.m.features.is_empty() {
            return Err(invalid!("the model has no input features"));
        }
        for (i, f) in self.m.features.iter().enumerate() {
            let name: Arc<str> = self.name(f.name).into();
            let what = || format!("feature {i} '{name}'");
            if !names.insert(name.clone()) {
                return Err(invalid!("{}: duplicate feature name", what()));
            }
            if f.flags & !1 != 0 {
                return Err(invalid!("{}: unknown flag bits {:#x}", what(), f.flags));
            }
            let kind = match f.kind {
                1 => InputKind::Dense,
                2 => InputKind::Sparse,
                3 => InputKind::Sequence,
                k => return Err(invalid!("{}: unknown kind {k}", what())),
            };
            if f.width == 0 || f.width > limits::DENSE_WIDTH {
                return Err(invalid!("{}: width {} out of range", what(), f.width));
            }
            let mut feature = Feature {
                name: name.clone(),
                kind,
                width: f.width as usize,
                max_len: 0,
                table: None,
                pooling: None,
                pad_id: None,
                ids_through_f32: f.flags & 1 != 0,
            };
            match kind {
                InputKind::Dense => {
                    if f.pooling != 0
                        || f.mask != 0
                        || f.flags != 0
                        || f.max_len != 0
                        || f.table != NONE
                        || f.pad_id != 0
                    {
                        return Err(invalid!("{}: a dense feature has no pooling, mask, flags, max_len, table or pad id", what()));
                    }
                }
                InputKind::Sparse | InputKind::Sequence => {
                    let (t, r) = self.tensor(f.table, &|| what())?;
                    if t.layout != Layout::Plain || r.cols != feature.width {
                        return Err(invalid!(
                            "{}: table '{}' must be plain [vocab, {}], it is {}x{} {}",
                            what(),
                            self.name(t.name),
                            feature.width,
                            r.rows,
                            r.cols,
                            t.layout.name()
                        ));
                    }
                    feature.table = Some(r);
                    if kind == InputKind::Sparse {
                        if f.pooling != 0 || f.mask != 0 || f.max_len != 0 || f.pad_id != 0 {
                            return Err(invalid!(
                                "{}: a sparse feature has no pooling, mask, max_len or pad id",
                                what()
                            ));
                        }
                        feature.max_len = 1;
                    } else {
                        if f.max_len == 0 || f.max_len > limits::MAX_LEN {
                            return Err(invalid!(
                                "{}: max_len {} out of range 1..={}",
                                what(),
                                f.max_len,
                                limits::MAX_LEN
                            ));
                        }
                        feature.max_len = f.max_len as usize;
                        feature.pooling = Some(match f.pooling {
                            1 => Pooling::Sum,
                            2 => Pooling::Mean,
                            3 => Pooling::Max,
                            p => return Err(invalid!("{}: unknown pooling {p}", what())),
                        });
                        feature.pad_id = match f.mask {
                            0 if f.pad_id == 0 => None,
                            0 => return Err(invalid!("{}: pad id without a pad-id mask", what())),
                            1 => Some(f.pad_id),
                            k => return Err(invalid!("{}: unknown mask kind {k}", what())),
                        };
                    }
                }
            }
            out.push(feature);
        }
        Ok(out)
    }

    fn mlp(
        &self,
        i: usize,
        layers: &[crate::format::LayerRecord],
        dtypes: &mut (bool, bool),
    ) -> Result<Mlp> {
        let mut out = Vec::with_capacity(layers.len());
        let mut prev: Option<usize> = None;
        for (j, l) in layers.iter().enumerate() {
            let what = || format!("MLP {i} layer {j}");
            let (t, weight) = self.tensor(l.weight, &what)?;
            if t.layout != Layout::Panel16 {
                return Err(invalid!(
                    "{}: weight '{}' must use the panel16 layout",
                    what(),
                    self.name(t.name)
                ));
            }
            match t.dtype {
                DType::F32 => dtypes.0 = true,
                DType::F16 => dtypes.1 = true,
            }
            let (k, n) = (weight.rows, weight.cols);
            if let Some(p) = prev {
                if p != k {
                    return Err(invalid!(
                        "{}: weight '{}' has {k} inputs, but the previous layer outputs {p}",
                        what(),
                        self.name(t.name)
                    ));
                }
            }
            let bias = opt(l.bias)
                .map(|b| self.f32_plain(b, 1, n, &what))
                .transpose()?;
            let no_param = |act: Act| -> Result<Act> {
                if l.act_param != NONE || l.act_scalar != 0.0 {
                    return Err(invalid!(
                        "{}: activation {} takes no parameters",
                        what(),
                        act.name()
                    ));
                }
                Ok(act)
            };
            let act = match l.act {
                0 => no_param(Act::Identity)?,
                1 => no_param(Act::Relu)?,
                2 => no_param(Act::Sigmoid)?,
                3 => no_param(Act::Tanh)?,
                8 => no_param(Act::Softmax)?,
                4 => {
                    if l.act_param != NONE || !l.act_scalar.is_finite() {
                        return Err(invalid!(
                            "{}: leaky relu needs a finite slope and no tensor",
                            what()
                        ));
                    }
                    Act::LeakyRelu(l.act_scalar)
                }
                5 => {
                    let (t, r) = self.tensor(l.act_param, &what)?;
                    let per_channel = r.cols == n && n != 1;
                    if t.dtype != DType::F32
                        || t.layout != Layout::Plain
                        || r.rows != 1
                        || !(r.cols == 1 || r.cols == n)
                        || l.act_scalar != 0.0
                    {
                        return Err(invalid!(
                            "{}: PReLU weight must be plain f32 [1,1] or [1,{n}]",
                            what()
                        ));
                    }
                    Act::PRelu {
                        param: r,
                        per_channel,
                    }
                }
                6 => {
                    let alpha = self.f32_plain(l.act_param, 1, 1, &what)?;
                    if !(l.act_scalar.is_finite() && l.act_scalar > 0.0) {
                        return Err(invalid!("{}: Dice eps must be positive and finite", what()));
                    }
                    Act::DiceRechub {
                        alpha,
                        eps: l.act_scalar,
                    }
                }
                7 => {
                    if l.act_scalar != 0.0 {
                        return Err(invalid!(
                            "{}: Dice (BatchNorm form) takes no scalar",
                            what()
                        ));
                    }
                    Act::DiceBn {
                        param: self.f32_plain(l.act_param, 3, n, &what)?,
                    }
                }
                c => return Err(invalid!("{}: unknown activation code {c}", what())),
            };
            out.push(Layer {
                k,
                n,
                weight,
                bias,
                act,
            });
            prev = Some(n);
        }
        Ok(Mlp { layers: out })
    }
}
