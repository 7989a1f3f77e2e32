//! A writer for `.ple` files, independent of the Python one: used to build synthetic models for
//! benchmarks, to craft invalid files for the validation tests, and to cross-check the spec: laid
//! out in the Python writer's order, the same model gives the same bytes (tests/cross_writer.rs
//! checks it against files the Python package wrote).

use ple::format::codes::{FEATURE_FLAG_CALLER_VECTORS, FEATURE_FLAG_IDS_F32};
use ple::format::{
    align64, crc32, meta_crc, DType, Layout, MAGIC, MAJOR, MINOR_INT8, MINOR_NODES, NONE,
};
use ple::format::{FileMeta, TensorRecord};
use ple::kernels::int8;

/// Builds a file part by part; indices returned by `add_*` are what the records refer to. `meta`
/// is the same type the reader parses, so what is written is exactly what can be read back.
#[derive(Default, Clone)]
pub struct Writer {
    pub meta: FileMeta,
    data: Vec<u8>,
}

impl Writer {
    pub fn new(name: &str) -> Writer {
        let mut w = Writer::default();
        w.meta.bottom = NONE;
        w.meta.model_name = w.string(name);
        w
    }

    pub fn string(&mut self, s: &str) -> u32 {
        if let Some(i) = self.meta.strings.iter().position(|x| x == s) {
            return i as u32;
        }
        self.meta.strings.push(s.to_owned());
        (self.meta.strings.len() - 1) as u32
    }

    fn push_tensor(
        &mut self,
        name: &str,
        dtype: DType,
        layout: Layout,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    ) -> u32 {
        let name = self.string(name);
        let offset = align64(self.data.len() as u64).unwrap();
        self.data.resize(offset as usize, 0);
        self.meta.tensors.push(TensorRecord {
            name,
            dtype,
            layout,
            rows: rows as u32,
            cols: cols as u32,
            offset,
            size: bytes.len() as u64,
        });
        self.data.extend_from_slice(&bytes);
        (self.meta.tensors.len() - 1) as u32
    }

    /// A plain tensor (`values` row-major, `rows × cols`).
    pub fn plain(
        &mut self,
        name: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        values: &[f32],
    ) -> u32 {
        assert_eq!(values.len(), rows * cols);
        self.push_tensor(
            name,
            dtype,
            Layout::Plain,
            rows,
            cols,
            encode(dtype, values),
        )
    }

    /// A dense-layer weight given as PyTorch `[n = out, k = in]` row-major, stored panel16 (f32,
    /// f16) or, for `DType::I8`, quantized into panel16x4 (`int8::quantize_weights`).
    pub fn weight(&mut self, name: &str, dtype: DType, n: usize, k: usize, out_in: &[f32]) -> u32 {
        assert_eq!(out_in.len(), n * k);
        if dtype == DType::I8 {
            let in_out: Vec<f32> = (0..k * n).map(|x| out_in[(x % n) * k + x / n]).collect();
            let bytes = int8::quantize_weights(&in_out, k, n).expect("quantizable weights");
            return self.push_tensor(name, dtype, Layout::Panel16x4, k, n, bytes);
        }
        let panels = n.div_ceil(16);
        let mut packed = vec![0f32; panels * k * 16];
        for o in 0..n {
            for i in 0..k {
                packed[(o / 16) * k * 16 + i * 16 + o % 16] = out_in[o * k + i];
            }
        }
        self.push_tensor(name, dtype, Layout::Panel16, k, n, encode(dtype, &packed))
    }

    /// The stored bytes of tensor `t`, for tests that need particular values in it.
    pub fn tensor_bytes_mut(&mut self, t: u32) -> &mut [u8] {
        let r = &self.meta.tensors[t as usize];
        &mut self.data[r.offset as usize..(r.offset + r.size) as usize]
    }

    /// Serialises the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_with_offsets().0
    }

    /// Serialises the file and says where each record starts in it, for tests that corrupt one
    /// field (a code the typed records cannot hold, say).
    pub fn to_bytes_with_offsets(&self) -> (Vec<u8>, RecordOffsets) {
        let mut at = RecordOffsets::default();
        let mut m = Vec::new();
        // Offsets are recorded inside the metadata and moved past the header at the end.
        let here = |m: &Vec<u8>| m.len() + 64;
        let u32s = |m: &mut Vec<u8>, v: &[u32]| {
            v.iter().for_each(|x| m.extend_from_slice(&x.to_le_bytes()))
        };
        m.extend_from_slice(&(self.meta.strings.len() as u32).to_le_bytes());
        for s in &self.meta.strings {
            m.extend_from_slice(&(s.len() as u16).to_le_bytes());
            m.extend_from_slice(s.as_bytes());
        }
        m.extend_from_slice(&(self.meta.tensors.len() as u32).to_le_bytes());
        for t in &self.meta.tensors {
            at.tensors.push(here(&m));
            m.extend_from_slice(&t.name.to_le_bytes());
            m.extend_from_slice(&[t.dtype.into(), t.layout.into(), 0, 0]);
            u32s(&mut m, &[t.rows, t.cols]);
            m.extend_from_slice(&t.offset.to_le_bytes());
            m.extend_from_slice(&t.size.to_le_bytes());
        }
        u32s(&mut m, &[self.meta.model_name, 0]);
        m.extend_from_slice(&(self.meta.features.len() as u32).to_le_bytes());
        for f in &self.meta.features {
            at.features.push(here(&m));
            m.extend_from_slice(&f.name.to_le_bytes());
            let mut flags = if f.ids_through_f32 {
                FEATURE_FLAG_IDS_F32
            } else {
                0
            };
            if f.kind != ple::InputKind::Dense && f.table == NONE {
                flags |= FEATURE_FLAG_CALLER_VECTORS;
            }
            let pooling = f.pooling.map_or(0, u8::from);
            m.extend_from_slice(&[f.kind.into(), pooling, f.mask.into(), flags]);
            u32s(&mut m, &[f.width, f.max_len, f.table, 0]);
            m.extend_from_slice(&f.pad_id.to_le_bytes());
        }
        m.extend_from_slice(&(self.meta.x0_order.len() as u32).to_le_bytes());
        u32s(&mut m, &self.meta.x0_order);
        m.extend_from_slice(&(self.meta.mlps.len() as u32).to_le_bytes());
        for layers in &self.meta.mlps {
            m.extend_from_slice(&(layers.len() as u32).to_le_bytes());
            at.layers.push(Vec::new());
            for l in layers {
                at.layers.last_mut().unwrap().push(here(&m));
                u32s(&mut m, &[l.weight, l.bias]);
                m.extend_from_slice(&[l.act.into(), 0, 0, 0]);
                m.extend_from_slice(&l.act_scalar.to_le_bytes());
                m.extend_from_slice(&l.act_param.to_le_bytes());
            }
        }
        u32s(
            &mut m,
            &[
                self.meta.bottom,
                self.meta.n_tasks,
                self.meta.levels.len() as u32,
            ],
        );
        for l in &self.meta.levels {
            u32s(&mut m, &[l.n_task_experts, l.n_shared]);
            u32s(&mut m, &l.task_experts);
            u32s(&mut m, &l.shared_experts);
            u32s(&mut m, &l.task_gates);
            u32s(&mut m, &[l.shared_gate]);
        }
        for t in &self.meta.towers {
            at.towers.push(here(&m));
            m.extend_from_slice(&t.mlp.to_le_bytes());
            m.extend_from_slice(&[t.input.into(), t.out_act.into(), 0, 0]);
        }
        m.extend_from_slice(&(self.meta.outputs.len() as u32).to_le_bytes());
        for o in &self.meta.outputs {
            at.outputs.push(here(&m));
            m.extend_from_slice(&o.name.to_le_bytes());
            m.extend_from_slice(&[o.kind.into(), 0, 0, 0]);
            u32s(&mut m, &[o.a, o.b]);
        }
        // The node section exists from format 1.3 on, after 1.2's input-scales section; files
        // without nodes stay 1.0 / 1.1 (this writer writes no input scales otherwise).
        let has_nodes = !self.meta.nodes.is_empty();
        if has_nodes {
            m.extend_from_slice(&(self.meta.input_scales.len() as u32).to_le_bytes());
            for r in &self.meta.input_scales {
                u32s(&mut m, &[r.mlp, r.layer, r.tensor]);
            }
            m.extend_from_slice(&(self.meta.nodes.len() as u32).to_le_bytes());
            for node in &self.meta.nodes {
                at.nodes.push(here(&m));
                m.extend_from_slice(&[node.op.into(), 0, 0, 0]);
                m.extend_from_slice(&(node.inputs.len() as u32).to_le_bytes());
                for i in &node.inputs {
                    m.extend_from_slice(&[i.source.into(), 0, 0, 0]);
                    m.extend_from_slice(&i.index.to_le_bytes());
                }
                u32s(&mut m, &node.mlps);
                m.extend_from_slice(&node.temperature.to_le_bytes());
            }
            let mut tower_nodes = self.meta.tower_nodes.clone();
            tower_nodes.resize(self.meta.towers.len(), NONE);
            u32s(&mut m, &tower_nodes);
        }

        let data_offset = align64(64 + m.len() as u64).unwrap();
        let data_size = if self.meta.tensors.is_empty() {
            0
        } else {
            align64(self.data.len() as u64).unwrap()
        };
        let mut data = self.data.clone();
        data.resize(data_size as usize, 0);
        let file_size = data_offset + data_size;

        let mut f = Vec::with_capacity(file_size as usize);
        f.extend_from_slice(&MAGIC);
        f.extend_from_slice(&MAJOR.to_le_bytes());
        // Files without int8 keep minor 0, as the Python writer does (FORMAT.md §7).
        let minor = if has_nodes {
            MINOR_NODES
        } else if m_has_i8(&self.meta) {
            MINOR_INT8
        } else {
            0
        };
        f.extend_from_slice(&minor.to_le_bytes());
        f.extend_from_slice(&64u32.to_le_bytes());
        for v in [file_size, 64, m.len() as u64, data_offset, data_size] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&meta_crc(&f, &m).to_le_bytes());
        f.extend_from_slice(&crc32(&data).to_le_bytes());
        f.extend_from_slice(&m);
        f.resize(data_offset as usize, 0);
        f.extend_from_slice(&data);
        (f, at)
    }
}

/// Byte offsets in the file of every record `to_bytes_with_offsets` wrote (FORMAT.md §3): the
/// start of each tensor, feature, layer (per MLP), tower, output and node record.
#[derive(Debug, Default)]
pub struct RecordOffsets {
    pub tensors: Vec<usize>,
    pub features: Vec<usize>,
    pub layers: Vec<Vec<usize>>,
    pub towers: Vec<usize>,
    pub outputs: Vec<usize>,
    /// Node records (format 1.3 files only).
    pub nodes: Vec<usize>,
}

fn m_has_i8(meta: &FileMeta) -> bool {
    meta.tensors.iter().any(|t| t.dtype == DType::I8)
}

fn encode(dtype: DType, values: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F16 => values
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
            .collect(),
        DType::I8 => panic!("i8 is only for dense weights (Writer::weight)"),
    }
}

/// Recomputes both checksums of a file in place (for tests that rewrite fields and want the
/// checksums to stay valid, so that the validation behind them is what gets exercised).
pub fn fix_checksums(file: &mut [u8]) {
    if file.len() < 64 {
        return;
    }
    let meta_size = u64::from_le_bytes(file[32..40].try_into().unwrap()) as usize;
    let data_offset = u64::from_le_bytes(file[40..48].try_into().unwrap()) as usize;
    let meta_end = 64usize.saturating_add(meta_size).min(file.len());
    let crc = meta_crc(file, &file[64..meta_end]);
    file[56..60].copy_from_slice(&crc.to_le_bytes());
    let data_crc = crc32(file.get(data_offset..).unwrap_or(&[]));
    file[60..64].copy_from_slice(&data_crc.to_le_bytes());
}
