//! Bounds-checked parsing of the metadata stream (FORMAT.md §3). Every count is checked against
//! the bytes actually left before anything is reserved, so a hostile count cannot allocate.

use super::codes::{
    Activation, DType, InputKind, Layout, Mask, NodeOp, OutputCode, Pooling, TowerActivation,
    TowerInput, UnknownCode, FEATURE_FLAG_CALLER_VECTORS, FEATURE_FLAG_IDS_F32,
};
use super::{align64, limits};
use crate::error::{invalid, Result};

#[derive(Debug, Clone)]
pub struct TensorRecord {
    pub name: u32,
    pub dtype: DType,
    pub layout: Layout,
    pub rows: u32,
    pub cols: u32,
    pub offset: u64,
    pub size: u64,
}

impl TensorRecord {
    /// Bytes the tensor must have: its elements times the element size, or the panels of
    /// panel16x4 (`None` on overflow).
    pub fn stored_size(&self) -> Option<u64> {
        if self.layout == Layout::Panel16x4 {
            let (k, n) = (self.rows as u64, self.cols as u64);
            return k
                .div_ceil(4)
                .checked_mul(64)?
                .checked_add(crate::kernels::int8::PANEL_HEADER as u64)?
                .checked_mul(n.div_ceil(16));
        }
        self.stored_elements()?.checked_mul(self.dtype.size())
    }

    /// Number of stored elements (panel16 pads the columns to a multiple of 16).
    pub fn stored_elements(&self) -> Option<u64> {
        let cols = match self.layout {
            Layout::Plain => self.cols as u64,
            Layout::Panel16 | Layout::Panel16x4 => {
                (self.cols as u64).div_ceil(16).checked_mul(16)?
            }
        };
        (self.rows as u64).checked_mul(cols)
    }
}

#[derive(Debug, Clone)]
pub struct FeatureRecord {
    pub name: u32,
    pub kind: InputKind,
    /// The file stores 0 for "no pooling".
    pub pooling: Option<Pooling>,
    pub mask: Mask,
    /// Flag bit 0; the other bits must be zero.
    pub ids_through_f32: bool,
    pub width: u32,
    pub max_len: u32,
    pub table: u32,
    pub pad_id: i64,
}

#[derive(Debug, Clone)]
pub struct LayerRecord {
    pub weight: u32,
    pub bias: u32,
    pub act: Activation,
    pub act_scalar: f32,
    pub act_param: u32,
}

#[derive(Debug, Clone)]
pub struct LevelRecord {
    pub n_task_experts: u32,
    pub n_shared: u32,
    pub task_experts: Vec<u32>,
    pub shared_experts: Vec<u32>,
    pub task_gates: Vec<u32>,
    pub shared_gate: u32,
}

#[derive(Debug, Clone)]
pub struct TowerRecord {
    pub mlp: u32,
    pub input: TowerInput,
    pub out_act: TowerActivation,
}

#[derive(Debug, Clone)]
pub struct OutputRecord {
    pub name: u32,
    pub kind: OutputCode,
    pub a: u32,
    pub b: u32,
}

/// An int8 layer's input scales (format 1.2, FORMAT.md §3.9): layer `layer` of MLP `mlp`
/// quantizes `x_j·r_j`, with r the f32 `[1, k]` tensor `tensor`.
#[derive(Debug, Clone)]
pub struct InputScaleRecord {
    pub mlp: u32,
    pub layer: u32,
    pub tensor: u32,
}

/// A value a graph node reads (§3.10): x0, the bottom's output, task `index`'s output of the last
/// level, or node `index`'s output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRecord {
    pub source: TowerInput,
    pub index: u32,
}

/// A graph node (§3.10, format 1.3).
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub op: NodeOp,
    pub inputs: Vec<SourceRecord>,
    /// `mlp`: `[mlp]`; `attention`: `[query, key, value]`.
    pub mlps: Vec<u32>,
    /// `attention`: the logits' divisor; `mlp`: 0.
    pub temperature: f32,
}

impl NodeOp {
    /// MLP references a node of this op stores.
    pub fn mlp_count(self) -> usize {
        match self {
            NodeOp::Mlp => 1,
            NodeOp::Attention => 3,
        }
    }
}

/// The metadata, parsed but not yet checked for graph consistency.
#[derive(Debug, Clone, Default)]
pub struct FileMeta {
    pub strings: Vec<String>,
    pub tensors: Vec<TensorRecord>,
    pub model_name: u32,
    pub features: Vec<FeatureRecord>,
    pub x0_order: Vec<u32>,
    pub mlps: Vec<Vec<LayerRecord>>,
    pub bottom: u32,
    pub n_tasks: u32,
    pub levels: Vec<LevelRecord>,
    pub towers: Vec<TowerRecord>,
    pub outputs: Vec<OutputRecord>,
    /// Empty before format 1.2.
    pub input_scales: Vec<InputScaleRecord>,
    /// Graph nodes (format 1.3; empty in older files).
    pub nodes: Vec<NodeRecord>,
    /// Per tower: the node it reads when its input is `node`, else `NONE` (format 1.3; empty in
    /// older files).
    pub tower_nodes: Vec<u32>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(invalid!(
                "metadata truncated while reading {what} at metadata byte {}",
                self.pos
            )),
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4"),
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }
    fn i64(&mut self, what: &str) -> Result<i64> {
        Ok(i64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }
    /// Reads a one-byte code of the field `T`; an unknown value is an error naming `what`.
    fn code<T: TryFrom<u8, Error = UnknownCode>>(&mut self, what: &str) -> Result<T> {
        T::try_from(self.u8(what)?).map_err(|e| invalid!("{what}: {e}"))
    }
    fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_bits(self.u32(what)?))
    }
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }
    /// Reads a count and checks that `count × min_record` bytes are left and the cap holds.
    fn count(&mut self, what: &str, min_record: usize, cap: usize) -> Result<usize> {
        let n = self.u32(what)? as usize;
        if n > cap {
            return Err(invalid!("{what} is {n}, over the limit of {cap}"));
        }
        if n.saturating_mul(min_record) > self.left() {
            return Err(invalid!(
                "{what} is {n}, but only {} metadata bytes are left",
                self.left()
            ));
        }
        Ok(n)
    }
    fn zero(&mut self, n: usize, what: &str) -> Result<()> {
        if self.take(n, what)?.iter().any(|&b| b != 0) {
            return Err(invalid!("{what} must be zero"));
        }
        Ok(())
    }
    fn u32s(&mut self, n: usize, what: &str) -> Result<Vec<u32>> {
        if n.saturating_mul(4) > self.left() {
            return Err(invalid!("metadata truncated while reading {what}"));
        }
        (0..n).map(|_| self.u32(what)).collect()
    }
}

fn check_string(s: &[u8], index: usize) -> Result<String> {
    let text = std::str::from_utf8(s).map_err(|_| invalid!("string {index} is not valid UTF-8"))?;
    if text.is_empty() || text.len() > limits::STRING_LEN {
        return Err(invalid!(
            "string {index} has length {}, must be 1..={}",
            text.len(),
            limits::STRING_LEN
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid!("string {index} contains control characters"));
    }
    Ok(text.to_owned())
}

/// Parses the metadata stream, section by section in file order (FORMAT.md §3.1–§3.7).
pub fn parse_meta(bytes: &[u8], minor: u16) -> Result<FileMeta> {
    let mut r = MetaReader {
        c: Cursor { bytes, pos: 0 },
        strings: Vec::new(),
    };
    r.strings = r.read_strings()?;
    let tensors = r.tensors()?;
    let model_name = r.model_header()?;
    let features = r.features()?;
    let n =
        r.c.count("concatenation order count", 4, limits::FEATURES)?;
    let x0_order = r.c.u32s(n, "concatenation order")?;
    let mlps = r.mlps()?;
    let bottom = r.c.u32("bottom")?;
    let n_tasks = r.task_count()?;
    let levels = r.levels(n_tasks)?;
    let towers = r.towers(n_tasks, minor)?;
    let outputs = r.outputs()?;
    let input_scales = if minor >= super::MINOR_INPUT_SCALES {
        r.input_scales()?
    } else {
        Vec::new()
    };
    let (nodes, tower_nodes) = if minor >= super::MINOR_NODES {
        (r.nodes()?, r.c.u32s(n_tasks, "tower node")?)
    } else {
        (Vec::new(), Vec::new())
    };
    // A newer minor may append fields this reader does not know (FORMAT.md §7).
    if r.c.left() != 0 && minor.cmp(&super::MINOR).is_le() {
        return Err(invalid!(
            "{} unexpected bytes after the end of the metadata",
            r.c.left()
        ));
    }
    Ok(FileMeta {
        strings: r.strings,
        tensors,
        model_name,
        features,
        x0_order,
        mlps,
        bottom,
        n_tasks: n_tasks as u32,
        levels,
        towers,
        outputs,
        input_scales,
        nodes,
        tower_nodes,
    })
}

/// The cursor and the strings read so far (every later section names strings by index).
struct MetaReader<'a> {
    c: Cursor<'a>,
    strings: Vec<String>,
}

impl MetaReader<'_> {
    /// Reads a string index and checks that it is in range.
    fn string_ref(&mut self, what: &str) -> Result<u32> {
        let idx = self.c.u32(what)?;
        if (idx as usize) < self.strings.len() {
            Ok(idx)
        } else {
            Err(invalid!(
                "{what} names string {idx}, but there are {}",
                self.strings.len()
            ))
        }
    }

    /// Reads a record's name and returns it with the record's description for messages:
    /// `tensor 3 'tower0.0.w'`.
    fn named(&mut self, record: &str) -> Result<(u32, String)> {
        let name = self.string_ref(record)?;
        Ok((name, format!("{record} '{}'", self.strings[name as usize])))
    }

    fn read_strings(&mut self) -> Result<Vec<String>> {
        let n = self.c.count("string count", 3, limits::STRINGS)?;
        let mut strings = Vec::with_capacity(n);
        for i in 0..n {
            let len = self.c.u16("string length")? as usize;
            strings.push(check_string(self.c.take(len, "string bytes")?, i)?);
        }
        Ok(strings)
    }

    fn tensors(&mut self) -> Result<Vec<TensorRecord>> {
        let n = self.c.count("tensor count", 32, limits::TENSORS)?;
        let mut tensors = Vec::with_capacity(n);
        for i in 0..n {
            let (name, what) = self.named(&format!("tensor {i}"))?;
            let dtype = self.c.code(&what)?;
            let layout = self.c.code(&what)?;
            self.c.zero(2, &format!("{what} reserved field"))?;
            let rows = self.c.u32(&what)?;
            let cols = self.c.u32(&what)?;
            let offset = self.c.u64(&what)?;
            let size = self.c.u64(&what)?;
            if rows == 0 || cols == 0 || rows >= limits::TENSOR_DIM || cols >= limits::TENSOR_DIM {
                return Err(invalid!("{what}: dimensions {rows}x{cols} out of range"));
            }
            tensors.push(TensorRecord {
                name,
                dtype,
                layout,
                rows,
                cols,
                offset,
                size,
            });
        }
        Ok(tensors)
    }

    /// The model's name; the flags must be zero in 1.0.
    fn model_header(&mut self) -> Result<u32> {
        let name = self.string_ref("model name")?;
        let flags = self.c.u32("model flags")?;
        if flags != 0 {
            return Err(invalid!(
                "model flags are {flags:#x}, must be 0 in format 1.0"
            ));
        }
        Ok(name)
    }

    fn features(&mut self) -> Result<Vec<FeatureRecord>> {
        let n = self.c.count("feature count", 32, limits::FEATURES)?;
        let mut features = Vec::with_capacity(n);
        for i in 0..n {
            let (name, what) = self.named(&format!("feature {i}"))?;
            let kind = self.c.code(&what)?;
            let pooling = match self.c.u8(&what)? {
                0 => None,
                code => Some(Pooling::try_from(code).map_err(|e| invalid!("{what}: {e}"))?),
            };
            let mask = self.c.code(&what)?;
            let flags = self.c.u8(&what)?;
            if flags & !(FEATURE_FLAG_IDS_F32 | FEATURE_FLAG_CALLER_VECTORS) != 0 {
                return Err(invalid!("{what}: unknown flag bits {flags:#x}"));
            }
            let width = self.c.u32(&what)?;
            let max_len = self.c.u32(&what)?;
            let table = self.c.u32(&what)?;
            // The flag says what the NONE table means, so a table dropped by corruption is not
            // silently read as "vectors from the caller".
            let vectors = flags & FEATURE_FLAG_CALLER_VECTORS != 0;
            if vectors != (kind != InputKind::Dense && table == super::NONE) {
                return Err(invalid!(
                    "{what}: flag bit 1 (embedding vectors from the caller) must be set exactly when a sparse or sequence feature has no table"
                ));
            }
            self.c.zero(4, &format!("{what} reserved field"))?;
            let pad_id = self.c.i64(&what)?;
            features.push(FeatureRecord {
                name,
                kind,
                pooling,
                mask,
                ids_through_f32: flags & FEATURE_FLAG_IDS_F32 != 0,
                width,
                max_len,
                table,
                pad_id,
            });
        }
        Ok(features)
    }

    fn mlps(&mut self) -> Result<Vec<Vec<LayerRecord>>> {
        let n = self.c.count("MLP count", 24, limits::MLPS)?;
        let mut mlps = Vec::with_capacity(n);
        for i in 0..n {
            let what = format!("MLP {i}");
            let n_layers = self
                .c
                .count(&format!("{what} layer count"), 20, limits::MLP_LAYERS)?;
            if n_layers == 0 {
                return Err(invalid!("{what} has no layers"));
            }
            let mut layers = Vec::with_capacity(n_layers);
            for j in 0..n_layers {
                let what = format!("{what} layer {j}");
                let weight = self.c.u32(&what)?;
                let bias = self.c.u32(&what)?;
                let act = self.c.code(&what)?;
                self.c.zero(3, &format!("{what} reserved field"))?;
                let act_scalar = self.c.f32(&what)?;
                let act_param = self.c.u32(&what)?;
                layers.push(LayerRecord {
                    weight,
                    bias,
                    act,
                    act_scalar,
                    act_param,
                });
            }
            mlps.push(layers);
        }
        Ok(mlps)
    }

    fn task_count(&mut self) -> Result<usize> {
        let n_tasks = self.c.u32("task count")?;
        if n_tasks == 0 || n_tasks as usize > limits::TASKS {
            return Err(invalid!(
                "task count {n_tasks} must be 1..={}",
                limits::TASKS
            ));
        }
        Ok(n_tasks as usize)
    }

    fn levels(&mut self, t: usize) -> Result<Vec<LevelRecord>> {
        let n = self.c.count("level count", 12, limits::LEVELS)?;
        let mut levels = Vec::with_capacity(n);
        for l in 0..n {
            let what = format!("level {l}");
            let s = self.c.u32(&what)? as usize;
            let sh = self.c.u32(&what)? as usize;
            if s.saturating_mul(t).saturating_add(sh) > limits::EXPERTS {
                return Err(invalid!("{what} has more than {} experts", limits::EXPERTS));
            }
            levels.push(LevelRecord {
                n_task_experts: s as u32,
                n_shared: sh as u32,
                task_experts: self.c.u32s(t * s, &what)?,
                shared_experts: self.c.u32s(sh, &what)?,
                task_gates: self.c.u32s(t, &what)?,
                shared_gate: self.c.u32(&what)?,
            });
        }
        Ok(levels)
    }

    fn towers(&mut self, t: usize, minor: u16) -> Result<Vec<TowerRecord>> {
        let mut towers = Vec::with_capacity(t);
        for i in 0..t {
            let what = format!("tower {i}");
            let mlp = self.c.u32(&what)?;
            let input = self.c.code(&what)?;
            if input == TowerInput::Node && minor < super::MINOR_NODES {
                return Err(invalid!(
                    "{what} reads a graph node, which needs format 1.{} (the file is 1.{minor})",
                    super::MINOR_NODES
                ));
            }
            let out_act = self.c.code(&what)?;
            self.c.zero(2, &format!("{what} reserved field"))?;
            towers.push(TowerRecord {
                mlp,
                input,
                out_act,
            });
        }
        Ok(towers)
    }

    fn input_scales(&mut self) -> Result<Vec<InputScaleRecord>> {
        let cap = limits::MLPS * limits::MLP_LAYERS;
        let n = self.c.count("input scale count", 12, cap)?;
        let mut records = Vec::with_capacity(n);
        for i in 0..n {
            let what = format!("input scale {i}");
            records.push(InputScaleRecord {
                mlp: self.c.u32(&what)?,
                layer: self.c.u32(&what)?,
                tensor: self.c.u32(&what)?,
            });
        }
        Ok(records)
    }

    /// The node section (§3.10): each node's op, its inputs, its MLPs and its scalar.
    fn nodes(&mut self) -> Result<Vec<NodeRecord>> {
        let n = self.c.count("node count", 16, limits::NODES)?;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let what = format!("node {i}");
            let op: NodeOp = self.c.code(&what)?;
            self.c.zero(3, &format!("{what} reserved field"))?;
            let n_inputs = self
                .c
                .count(&format!("{what} input count"), 8, limits::NODE_INPUTS)?;
            if n_inputs == 0 || (op == NodeOp::Mlp && n_inputs != 1) {
                return Err(invalid!(
                    "{what} ({}) has {n_inputs} inputs, must be {}",
                    op.name(),
                    if op == NodeOp::Mlp { "1" } else { "1..=64" }
                ));
            }
            let mut inputs = Vec::with_capacity(n_inputs);
            for j in 0..n_inputs {
                let what = format!("{what} input {j}");
                let source = self.c.code(&what)?;
                self.c.zero(3, &format!("{what} reserved field"))?;
                let index = self.c.u32(&what)?;
                inputs.push(SourceRecord { source, index });
            }
            let mlps = self.c.u32s(op.mlp_count(), &what)?;
            let temperature = self.c.f32(&what)?;
            nodes.push(NodeRecord {
                op,
                inputs,
                mlps,
                temperature,
            });
        }
        Ok(nodes)
    }

    fn outputs(&mut self) -> Result<Vec<OutputRecord>> {
        let n = self.c.count("output count", 16, limits::OUTPUTS)?;
        if n == 0 {
            return Err(invalid!("the model has no outputs"));
        }
        let mut outputs = Vec::with_capacity(n);
        for i in 0..n {
            let (name, what) = self.named(&format!("output {i}"))?;
            let kind = self.c.code(&what)?;
            self.c.zero(3, &format!("{what} reserved field"))?;
            let a = self.c.u32(&what)?;
            let b = self.c.u32(&what)?;
            outputs.push(OutputRecord { name, kind, a, b });
        }
        Ok(outputs)
    }
}

/// Checks sizes, canonical offsets and name uniqueness of the tensor table (FORMAT.md §3.2).
pub fn check_tensor_layout(
    tensors: &[TensorRecord],
    strings: &[String],
    data_size: u64,
    minor: u16,
) -> Result<()> {
    let mut expected_offset = 0u64;
    let mut end = 0u64;
    let mut names = std::collections::HashSet::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let name = &strings[t.name as usize];
        if !names.insert(t.name) {
            return Err(invalid!("tensor {i}: duplicate tensor name '{name}'"));
        }
        if (t.dtype == DType::I8) != (t.layout == Layout::Panel16x4) {
            return Err(invalid!(
                "tensor {i} '{name}': dtype {} with layout {} (i8 goes with panel16x4 and only \
                 with it)",
                t.dtype.name(),
                t.layout.name()
            ));
        }
        if t.dtype == DType::I8 && minor < super::MINOR_INT8 {
            return Err(invalid!(
                "tensor {i} '{name}': an i8 tensor in a 1.{minor} file (i8 needs format 1.{})",
                super::MINOR_INT8
            ));
        }
        let expected_size = t
            .stored_size()
            .ok_or_else(|| invalid!("tensor {i} '{name}': size overflows"))?;
        if t.size != expected_size {
            return Err(invalid!(
                "tensor {i} '{name}': size is {} bytes, but {}x{} {} {} needs {expected_size}",
                t.size,
                t.rows,
                t.cols,
                t.dtype.name(),
                t.layout.name()
            ));
        }
        if t.offset != expected_offset {
            return Err(invalid!(
                "tensor {i} '{name}': offset {} is not canonical (expected {expected_offset}: \
                 tensors follow each other in table order, each 64-byte aligned)",
                t.offset
            ));
        }
        end = t
            .offset
            .checked_add(t.size)
            .ok_or_else(|| invalid!("tensor {i} '{name}': offset + size overflows"))?;
        expected_offset =
            align64(end).ok_or_else(|| invalid!("tensor {i} '{name}': offset overflows"))?;
    }
    let expected_data = if tensors.is_empty() {
        0
    } else {
        align64(end).unwrap_or(u64::MAX)
    };
    if data_size != expected_data {
        return Err(invalid!(
            "data section has {data_size} bytes, but the tensors end at {expected_data}"
        ));
    }
    Ok(())
}
