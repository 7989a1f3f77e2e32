//! The immutable, shareable model: the mapped (or owned) file, its validated graph, the execution
//! plan and the SIMD level, all fixed at load.

pub mod graph;
pub mod plan;

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{self, DType, Header};
use crate::kernels::{Panels, SimdLevel};
use graph::{Feature, Graph, TensorRef};
use plan::{GateSlot, Plan};

pub use graph::{InputKind, Pooling};

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Also verify the data checksum (reads every byte of the file; off by default so large
    /// embedding tables still open in milliseconds).
    pub verify_data: bool,
    /// Read the file into memory instead of mapping it. Use on filesystems where the file may be
    /// truncated or rewritten in place while it is in use (NFS, some container overlays): a
    /// mapping would then fault (SIGBUS), an in-memory copy cannot.
    pub read_into_memory: bool,
    /// Force a SIMD level (must be available on this CPU); `None` = best available, lowered by the
    /// `PLE_SIMD` environment variable.
    pub simd: Option<SimdLevel>,
}

/// A loaded model. Cheap to clone (reference counted), `Send + Sync`: share one across all threads
/// and give each thread its own [`crate::Session`].
#[derive(Clone)]
pub struct Model {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    storage: Storage,
    pub(crate) header: Header,
    pub(crate) graph: Graph,
    pub(crate) plan: Plan,
    pub(crate) simd: SimdLevel,
}

/// Bytes that stay put for the model's lifetime, 64-byte aligned at the start.
enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<Block64>),
    Empty,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block64([u8; 64]);

impl Storage {
    fn owned(bytes: &[u8]) -> (Storage, usize) {
        let mut blocks = vec![Block64([0; 64]); bytes.len().div_ceil(64)];
        for (b, chunk) in blocks.iter_mut().zip(bytes.chunks(64)) {
            b.0[..chunk.len()].copy_from_slice(chunk);
        }
        (Storage::Owned(blocks), bytes.len())
    }

    fn bytes(&self, len: usize) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(blocks) => {
                // SAFETY: `Block64` is `repr(C)` plain bytes, so the blocks are `len.div_ceil(64)·64`
                // contiguous initialised bytes; `len` never exceeds that.
                unsafe { std::slice::from_raw_parts(blocks.as_ptr() as *const u8, len) }
            }
            Storage::Empty => &[],
        }
    }
}

impl Model {
    /// Maps, validates and plans the file at `path` (header and metadata checksum verified).
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        Self::open_with(path, &LoadOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len() as usize;
        let storage = if opts.read_into_memory || len < format::HEADER_SIZE {
            let bytes = std::fs::read(path).map_err(io)?;
            Storage::owned(&bytes)
        } else {
            // SAFETY: the map is read-only. Its contents could still change if another process
            // truncates or rewrites the file in place; docs/FORMAT.md and the README prescribe the
            // write-new-then-rename deploy pattern, and `read_into_memory` for filesystems where
            // that cannot be guaranteed.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
            (Storage::Mapped(map), len)
        };
        Self::load(storage.0, storage.1, opts)
    }

    /// Loads a model from a buffer (copied into 64-byte-aligned memory the model owns).
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        Self::from_bytes_with(bytes, &LoadOptions::default())
    }

    pub fn from_bytes_with(bytes: &[u8], opts: &LoadOptions) -> Result<Model> {
        let (storage, len) = if bytes.is_empty() {
            (Storage::Empty, 0)
        } else {
            Storage::owned(bytes)
        };
        Self::load(storage, len, opts)
    }

    fn load(storage: Storage, len: usize, opts: &LoadOptions) -> Result<Model> {
        if cfg!(target_endian = "big") {
            return Err(Error::InvalidFile(
                "this reader runs on a big-endian CPU; .ple files are little-endian".into(),
            ));
        }
        let simd = match opts.simd {
            Some(level) => level.if_available().ok_or_else(|| {
                Error::InvalidFile(format!(
                    "SIMD level {} is not available on this CPU",
                    level.name()
                ))
            })?,
            None => SimdLevel::detect(),
        };
        let bytes = storage.bytes(len);
        let (header, meta) = format::parse(bytes)?;
        if opts.verify_data {
            format::verify_data_crc(bytes, &header, |_, _| {})?;
        }
        let graph = Graph::from_meta(&header, &meta)?;
        let plan = plan::build(&graph)?;
        Ok(Model {
            inner: Arc::new(Inner {
                storage,
                header,
                graph,
                plan,
                simd,
            }),
        })
    }

    /// Verifies the data checksum of an already loaded model, reporting progress as
    /// `(bytes done, total)`.
    pub fn verify_data(&self, progress: impl FnMut(u64, u64)) -> Result<()> {
        format::verify_data_crc(self.bytes(), &self.inner.header, progress)
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    fn bytes(&self) -> &[u8] {
        self.inner
            .storage
            .bytes(self.inner.header.file_size as usize)
    }

    /// `len` f32 values of tensor `t`.
    pub(crate) fn f32s(&self, t: &TensorRef, len: usize) -> &[f32] {
        let b = &self.bytes()[t.offset..t.offset + len * 4];
        // SAFETY: the storage starts 64-byte aligned and tensor offsets are multiples of 64 (checked
        // at load), so the pointer is aligned for f32; `b` is in bounds (sliced above) and every bit
        // pattern is a valid f32; the file is little-endian and so is this CPU (checked at load).
        unsafe { std::slice::from_raw_parts(b.as_ptr() as *const f32, len) }
    }

    /// `len` binary16 values of tensor `t`, as bits.
    pub(crate) fn f16s(&self, t: &TensorRef, len: usize) -> &[u16] {
        let b = &self.bytes()[t.offset..t.offset + len * 2];
        // SAFETY: as in `f32s`, with 2-byte alignment.
        unsafe { std::slice::from_raw_parts(b.as_ptr() as *const u16, len) }
    }

    /// Address of row `id` of a plain table (for prefetching; `id` may be out of range: the
    /// pointer is then only computed, never read).
    pub(crate) fn row_ptr(&self, table: &TensorRef, id: i64) -> *const u8 {
        let offset = (id as usize)
            .wrapping_mul(table.cols * table.dtype.size() as usize)
            .wrapping_add(table.offset);
        self.bytes().as_ptr().wrapping_add(offset)
    }

    /// A dense layer's weight panels.
    pub(crate) fn panels(&self, t: &TensorRef) -> Panels<'_> {
        let len = t.cols.div_ceil(16) * 16 * t.rows;
        match t.dtype {
            DType::F32 => Panels::F32(self.f32s(t, len)),
            DType::F16 => Panels::F16(self.f16s(t, len)),
        }
    }

    // ---- introspection ----------------------------------------------------------------------

    /// The model's name as stored in the file.
    pub fn name(&self) -> &str {
        &self.inner.graph.name
    }
    /// Format version `(major, minor)` of the file.
    pub fn format_version(&self) -> (u16, u16) {
        (self.inner.header.major, self.inner.header.minor)
    }
    /// File size in bytes.
    pub fn file_size(&self) -> u64 {
        self.inner.header.file_size
    }
    /// The SIMD level the kernels use.
    pub fn simd_level(&self) -> SimdLevel {
        self.inner.simd
    }
    /// The input features, in the order scoring calls take them.
    pub fn inputs(&self) -> &[Feature] {
        &self.inner.graph.features
    }
    /// Index of the input named `name`.
    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs().iter().position(|f| &*f.name == name)
    }
    /// The output names and widths, in output-column order.
    pub fn outputs(&self) -> impl ExactSizeIterator<Item = (&str, usize)> {
        self.inner.graph.outputs.iter().map(|o| (&*o.name, o.width))
    }
    /// Floats per sample in the output buffer.
    pub fn output_width(&self) -> usize {
        self.inner.plan.output_width
    }
    /// The gates whose weights `gates` buffers receive, in column order.
    pub fn gates(&self) -> &[GateSlot] {
        &self.inner.plan.gates
    }
    /// Floats per sample in a gate-weights buffer.
    pub fn gate_width(&self) -> usize {
        self.inner.plan.gate_width
    }
    /// Dtype of the dense-layer weights (`None` if the file mixes f32 and f16).
    pub fn weight_dtype(&self) -> Option<DType> {
        self.inner.graph.weight_dtype
    }
    /// Number of tasks (towers).
    pub fn n_tasks(&self) -> usize {
        self.inner.graph.n_tasks
    }
    /// The validated graph, for tools that describe the model.
    pub fn graph(&self) -> &Graph {
        &self.inner.graph
    }
    /// Working floats per sample a session needs.
    pub fn scratch_floats_per_sample(&self) -> usize {
        self.inner.plan.width
    }
    /// Samples per tile: a session's working memory is `min(max_batch, tile_rows)` samples.
    /// 64, or 128 for models whose dense weights (over 8 MiB) stream from memory.
    pub fn tile_rows(&self) -> usize {
        self.inner.plan.tile_rows
    }
    /// Parameters: dense weights and biases, activation parameters and embedding tables.
    pub fn parameter_count(&self) -> u64 {
        let g = &self.inner.graph;
        // Features sharing a table count it once.
        let mut seen = std::collections::HashSet::new();
        let mut n: u64 = g
            .features
            .iter()
            .filter_map(|f| f.table)
            .filter(|t| seen.insert(t.offset))
            .map(|t| (t.rows * t.cols) as u64)
            .sum();
        for l in g.mlps.iter().flat_map(|m| &m.layers) {
            n += (l.k * l.n) as u64 + l.bias.map_or(0, |b| b.cols as u64);
            n += match l.act {
                graph::Act::PRelu { param, .. } => param.cols as u64,
                graph::Act::DiceRechub { .. } => 1,
                graph::Act::DiceBn { param } => 3 * param.cols as u64,
                _ => 0,
            };
        }
        n
    }
    /// Multiply-adds ×2 per sample in the dense layers and gate mixtures.
    pub fn flops_per_sample(&self) -> u64 {
        let p = &self.inner.plan;
        p.ops
            .iter()
            .map(|op| match op {
                plan::Op::Dense { layer, .. } => 2 * (layer.k * layer.n) as u64,
                plan::Op::Mix { experts, width, .. } => 2 * (experts.len() * width) as u64,
                _ => 0,
            })
            .sum()
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name())
            .field("inputs", &self.inputs().len())
            .field("output_width", &self.output_width())
            .field("simd", &self.simd_level())
            .finish()
    }
}
