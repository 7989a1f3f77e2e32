//! Bounds-checked parsing of the metadata stream (FORMAT.md §3). Every count is checked against
//! the bytes actually left before anything is reserved, so a hostile count cannot allocate.

use super::{align64, limits, DType, Layout};
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
    /// Number of stored elements (panel16 pads the columns to a multiple of 16).
    pub fn stored_elements(&self) -> Option<u64> {
        let cols = match self.layout {
            Layout::Plain => self.cols as u64,
            Layout::Panel16 => (self.cols as u64).div_ceil(16).checked_mul(16)?,
        };
        (self.rows as u64).checked_mul(cols)
    }
}

#[derive(Debug, Clone)]
pub struct FeatureRecord {
    pub name: u32,
    pub kind: u8,
    pub pooling: u8,
    pub mask: u8,
    pub flags: u8,
    pub width: u32,
    pub max_len: u32,
    pub table: u32,
    pub pad_id: i64,
}

#[derive(Debug, Clone)]
pub struct LayerRecord {
    pub weight: u32,
    pub bias: u32,
    pub act: u8,
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
    pub input: u8,
    pub out_act: u8,
}

#[derive(Debug, Clone)]
pub struct OutputRecord {
    pub name: u32,
    pub kind: u8,
    pub a: u32,
    pub b: u32,
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

pub fn parse_meta(bytes: &[u8], minor: u16) -> Result<FileMeta> {
    let mut c = Cursor { bytes, pos: 0 };

    let n = c.count("string count", 3, limits::STRINGS)?;
    let mut strings = Vec::with_capacity(n);
    for i in 0..n {
        let len = c.u16("string length")? as usize;
        strings.push(check_string(c.take(len, "string bytes")?, i)?);
    }
    let string_ref = |idx: u32, what: &str| -> Result<u32> {
        if (idx as usize) < strings.len() {
            Ok(idx)
        } else {
            Err(invalid!(
                "{what} names string {idx}, but there are {}",
                strings.len()
            ))
        }
    };

    let n = c.count("tensor count", 32, limits::TENSORS)?;
    let mut tensors = Vec::with_capacity(n);
    for i in 0..n {
        let what = format!("tensor {i}");
        let name = string_ref(c.u32(&what)?, &what)?;
        let dtype = match c.u8(&what)? {
            1 => DType::F32,
            2 => DType::F16,
            d => return Err(invalid!("{what}: unknown dtype code {d}")),
        };
        let layout = match c.u8(&what)? {
            0 => Layout::Plain,
            1 => Layout::Panel16,
            l => return Err(invalid!("{what}: unknown layout code {l}")),
        };
        c.zero(2, &format!("{what} reserved field"))?;
        let rows = c.u32(&what)?;
        let cols = c.u32(&what)?;
        let offset = c.u64(&what)?;
        let size = c.u64(&what)?;
        if rows == 0 || cols == 0 || rows >= limits::TENSOR_DIM || cols >= limits::TENSOR_DIM {
            return Err(invalid!(
                "{what} '{}': dimensions {rows}x{cols} out of range",
                strings[name as usize]
            ));
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

    let model_name = string_ref(c.u32("model name")?, "model name")?;
    let flags = c.u32("model flags")?;
    if flags != 0 {
        return Err(invalid!(
            "model flags are {flags:#x}, must be 0 in format 1.0"
        ));
    }

    let n = c.count("feature count", 32, limits::FEATURES)?;
    let mut features = Vec::with_capacity(n);
    for i in 0..n {
        let what = format!("feature {i}");
        let name = string_ref(c.u32(&what)?, &what)?;
        let kind = c.u8(&what)?;
        let pooling = c.u8(&what)?;
        let mask = c.u8(&what)?;
        let flags = c.u8(&what)?;
        let width = c.u32(&what)?;
        let max_len = c.u32(&what)?;
        let table = c.u32(&what)?;
        c.zero(4, &format!("{what} reserved field"))?;
        let pad_id = c.i64(&what)?;
        features.push(FeatureRecord {
            name,
            kind,
            pooling,
            mask,
            flags,
            width,
            max_len,
            table,
            pad_id,
        });
    }

    let n = c.count("concatenation order count", 4, limits::FEATURES)?;
    let x0_order = c.u32s(n, "concatenation order")?;

    let n = c.count("MLP count", 24, limits::MLPS)?;
    let mut mlps = Vec::with_capacity(n);
    for i in 0..n {
        let what = format!("MLP {i}");
        let layers = c.count(&format!("{what} layer count"), 20, limits::MLP_LAYERS)?;
        if layers == 0 {
            return Err(invalid!("{what} has no layers"));
        }
        let mut v = Vec::with_capacity(layers);
        for _ in 0..layers {
            let weight = c.u32(&what)?;
            let bias = c.u32(&what)?;
            let act = c.u8(&what)?;
            c.zero(3, &format!("{what} reserved field"))?;
            let act_scalar = c.f32(&what)?;
            let act_param = c.u32(&what)?;
            v.push(LayerRecord {
                weight,
                bias,
                act,
                act_scalar,
                act_param,
            });
        }
        mlps.push(v);
    }

    let bottom = c.u32("bottom")?;
    let n_tasks = c.u32("task count")?;
    if n_tasks == 0 || n_tasks as usize > limits::TASKS {
        return Err(invalid!(
            "task count {n_tasks} must be 1..={}",
            limits::TASKS
        ));
    }
    let t = n_tasks as usize;
    let n = c.count("level count", 12, limits::LEVELS)?;
    let mut levels = Vec::with_capacity(n);
    for l in 0..n {
        let what = format!("level {l}");
        let s = c.u32(&what)? as usize;
        let sh = c.u32(&what)? as usize;
        if s.saturating_mul(t).saturating_add(sh) > limits::EXPERTS {
            return Err(invalid!("{what} has more than {} experts", limits::EXPERTS));
        }
        let task_experts = c.u32s(t * s, &what)?;
        let shared_experts = c.u32s(sh, &what)?;
        let task_gates = c.u32s(t, &what)?;
        let shared_gate = c.u32(&what)?;
        levels.push(LevelRecord {
            n_task_experts: s as u32,
            n_shared: sh as u32,
            task_experts,
            shared_experts,
            task_gates,
            shared_gate,
        });
    }

    let mut towers = Vec::with_capacity(t);
    for i in 0..t {
        let what = format!("tower {i}");
        let mlp = c.u32(&what)?;
        let input = c.u8(&what)?;
        let out_act = c.u8(&what)?;
        c.zero(2, &format!("{what} reserved field"))?;
        towers.push(TowerRecord {
            mlp,
            input,
            out_act,
        });
    }

    let n = c.count("output count", 16, limits::OUTPUTS)?;
    if n == 0 {
        return Err(invalid!("the model has no outputs"));
    }
    let mut outputs = Vec::with_capacity(n);
    for i in 0..n {
        let what = format!("output {i}");
        let name = string_ref(c.u32(&what)?, &what)?;
        let kind = c.u8(&what)?;
        c.zero(3, &format!("{what} reserved field"))?;
        let a = c.u32(&what)?;
        let b = c.u32(&what)?;
        outputs.push(OutputRecord { name, kind, a, b });
    }

    if c.left() != 0 && minor.cmp(&super::MINOR) != std::cmp::Ordering::Greater {
        return Err(invalid!(
            "{} unexpected bytes after the end of the metadata",
            c.left()
        ));
    }

    Ok(FileMeta {
        strings,
        tensors,
        model_name,
        features,
        x0_order,
        mlps,
        bottom,
        n_tasks,
        levels,
        towers,
        outputs,
    })
}

/// Checks sizes, canonical offsets and name uniqueness of the tensor table (FORMAT.md §3.2).
pub fn check_tensor_layout(
    tensors: &[TensorRecord],
    strings: &[String],
    data_size: u64,
) -> Result<()> {
    let mut expected_offset = 0u64;
    let mut end = 0u64;
    let mut names = std::collections::HashSet::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let name = &strings[t.name as usize];
        if !names.insert(t.name) {
            return Err(invalid!("tensor {i}: duplicate tensor name '{name}'"));
        }
        let expected_size = t
            .stored_elements()
            .and_then(|e| e.checked_mul(t.dtype.size()))
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
