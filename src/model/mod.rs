//! The immutable, shareable model: the mapped (or owned) file, its validated graph, the execution
//! plan and the SIMD level, all fixed at load.

pub mod graph;
pub(crate) mod memory;
pub mod plan;
mod storage;

use std::ops::{ControlFlow, Range};
use std::path::Path;
use std::sync::Arc;

use crate::error::{invalid, Error, Result};
use crate::format::{self, DType, FileMeta, Header};
use crate::kernels::int8::{self, I8Level};
use crate::kernels::{Panels, SimdLevel};
use graph::{Feature, Graph, TensorRef};
use plan::{GateSlot, Plan};
use storage::{AlignedBytes, ModelFile, Origin, Storage};

pub use graph::{InputKind, Pooling};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Also verify the data checksum (reads every byte of the file; off by default so large
    /// embedding tables still open in milliseconds).
    pub verify_data: bool,
    /// Read the file into memory instead of mapping it. The model then owns a copy that writes to
    /// the file cannot change (docs/ROBUSTNESS.md says what they do to a mapped model). The file is
    /// read once, and only after its header and metadata have been checked.
    pub read_into_memory: bool,
    /// Force a SIMD level (must be available on this CPU); `None` = best available, lowered by the
    /// `PLE_SIMD` environment variable.
    pub simd: Option<SimdLevel>,
    /// Bring every page of the model into memory before `open` returns ([`Model::warm`]), so the
    /// first requests do not wait for page faults (a cold table row costs a disk read). Open then
    /// takes as long as reading the file.
    pub warm: bool,
    /// Lock the model's pages in RAM (`mlock`, after warming them), so they are never evicted
    /// while the model lives: latency stays flat under memory pressure. The pages count against
    /// `RLIMIT_MEMLOCK`; a refusal is an [`Error::Lock`] that names it.
    pub lock: bool,
    /// Leave the kernel's readahead on for the embedding tables of a mapped file. Off by default:
    /// tables are read one row at a time at random ids, so readahead around a cold row reads
    /// mostly rows nobody asked for (docs/PERFORMANCE.md, cold start). No effect on a model
    /// read into memory.
    pub table_readahead: bool,
    /// When a scoring call finds a table row that is not in memory (a lookup that took a page
    /// fault from disk), ask the kernel for the rows of the rest of its tile at once, so that
    /// their reads overlap instead of queueing one by one (docs/DESIGN.md, "Cold start"). On by
    /// default; costs two clock reads per sample and one `getrusage` per tile while everything is
    /// resident (0.4-1% measured). Mapped files only.
    pub fault_ahead: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            verify_data: false,
            read_into_memory: false,
            simd: None,
            warm: false,
            lock: false,
            table_readahead: false,
            fault_ahead: true,
        }
    }
}

/// How much of a model is in RAM now ([`Model::residency`]): pages counted by `mincore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Residency {
    /// Bytes of the whole model (the file's size).
    pub total_bytes: u64,
    /// Of those, bytes resident in RAM.
    pub resident_bytes: u64,
    /// Bytes of the embedding tables (each table counted once).
    pub table_bytes: u64,
    /// Of those, bytes resident in RAM.
    pub table_resident_bytes: u64,
}

/// A loaded model. Cheap to clone (reference counted), `Send + Sync`: share one across all threads
/// and give each thread its own [`crate::Session`].
#[derive(Clone)]
pub struct Model {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    storage: Storage,
    /// The file the model was opened from (`None` for a model loaded from bytes).
    origin: Option<Origin>,
    pub(crate) header: Header,
    pub(crate) graph: Graph,
    pub(crate) plan: Plan,
    pub(crate) simd: SimdLevel,
    /// The int8 kernels' level, within `simd` (`I8Level::for_simd`).
    pub(crate) int8: I8Level,
    /// Byte ranges of the embedding tables, each table once.
    tables: Vec<Range<usize>>,
    /// Whether tables keep the kernel's readahead (`LoadOptions::table_readahead`).
    table_readahead: bool,
    /// `LoadOptions::fault_ahead`, for a mapped file.
    fault_ahead: bool,
    locked: bool,
}

impl Model {
    /// Maps, validates and plans the file at `path` (header and metadata checksum verified).
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        Self::open_with(path, &LoadOptions::default())
    }

    /// Opens the regular file at `path` (devices, FIFOs, sockets and directories are refused
    /// before anything is read), maps it or reads it into memory, then validates and plans it.
    pub fn open_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        let file = ModelFile::open(path.as_ref())?;
        // A file shorter than the header cannot be mapped (an empty map is an error); reading it
        // gives the precise error.
        let (storage, header, meta, origin) =
            if opts.read_into_memory || file.len() < format::HEADER_SIZE as u64 {
                file.read()?
            } else {
                file.map(!opts.table_readahead)?
            };
        Self::load(storage, header, meta, Some(origin), opts)
    }

    /// Loads a model from a buffer (copied into 64-byte-aligned memory the model owns).
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        Self::from_bytes_with(bytes, &LoadOptions::default())
    }

    pub fn from_bytes_with(bytes: &[u8], opts: &LoadOptions) -> Result<Model> {
        let (header, meta) = format::parse(bytes)?;
        let copy = AlignedBytes::copy_of(bytes).map_err(|source| Error::Io {
            path: "(bytes in memory)".into(),
            source,
        })?;
        Self::load(Storage::Owned(copy), header, meta, None, opts)
    }

    fn load(
        storage: Storage,
        header: Header,
        meta: FileMeta,
        origin: Option<Origin>,
        opts: &LoadOptions,
    ) -> Result<Model> {
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
        if opts.verify_data {
            format::verify_data_crc(storage.bytes(), &header, |_, _| {})?;
        }
        let graph = Graph::from_meta(&header, &meta)?;
        check_int8_weights(&graph, storage.bytes())?;
        let plan = plan::build(&graph, storage.bytes())?;
        let tables = table_ranges(&graph);
        let storage_is_mapped = storage.is_mapped();
        let mut inner = Inner {
            storage,
            origin,
            header,
            graph,
            plan,
            simd,
            int8: I8Level::for_simd(simd),
            tables,
            table_readahead: opts.table_readahead,
            fault_ahead: opts.fault_ahead && storage_is_mapped,
            locked: false,
        };
        inner.advise_default();
        if opts.warm || opts.lock {
            inner.warm(&mut |_, _| ControlFlow::Continue(()))?;
        }
        if opts.lock {
            inner.storage.lock().map_err(Error::Lock)?;
            inner.locked = true;
        }
        Ok(Model {
            inner: Arc::new(inner),
        })
    }

    /// Brings every page of the model into memory, so that the first requests after it find their
    /// table rows resident instead of waiting for page faults (for a cold file, one disk read
    /// each). For a mapped file the kernel is asked to read ahead of the pass, and every page is
    /// touched, so that it is also mapped into this process; for a model read into memory it only
    /// touches the pages. Takes about as long as reading the file sequentially.
    ///
    /// `progress(bytes done, total)` is called at the start and after every 8 MiB; returning
    /// `ControlFlow::Break(())` stops the pass with [`Error::Cancelled`] (the pages already
    /// touched stay warm). Safe to run on a background thread while other threads score with
    /// the model: it only reads the bytes. A mapped file found shorter than at open is an error
    /// before any of it is read (reading past its new end would crash the process).
    ///
    /// The pages stay resident only as long as the kernel keeps them: under memory pressure it
    /// may evict them again unless the model was opened with [`LoadOptions::lock`].
    pub fn warm(&self, mut progress: impl FnMut(u64, u64) -> ControlFlow<()>) -> Result<()> {
        self.inner.warm(&mut progress)
    }

    /// How much of the model, and of its embedding tables, is resident in RAM now. For a mapped
    /// model this is the page cache's share of the file that this mapping sees; a model read into
    /// memory is resident unless swapped out. Costs one `mincore` call per 16 MiB.
    pub fn residency(&self) -> Result<Residency> {
        let inner = &self.inner;
        let io = |source| Error::Io {
            path: inner
                .origin
                .as_ref()
                .map_or_else(|| "(bytes in memory)".into(), |o| o.shown()),
            source,
        };
        let bytes = inner.storage.bytes();
        let mut r = Residency {
            total_bytes: bytes.len() as u64,
            resident_bytes: memory::resident(bytes).map_err(io)?,
            table_bytes: 0,
            table_resident_bytes: 0,
        };
        for t in &inner.tables {
            r.table_bytes += t.len() as u64;
            r.table_resident_bytes += memory::resident(&bytes[t.clone()]).map_err(io)?;
        }
        Ok(r)
    }

    /// Whether the model's pages are locked in RAM ([`LoadOptions::lock`]).
    pub fn is_locked(&self) -> bool {
        self.inner.locked
    }

    /// Whether the file the model was opened from has changed since: its path now names another
    /// file (renamed over, a symlink switched) or none, or the file's size, modification time or
    /// status-change time differ (it was written to in place or truncated). Always false for a
    /// model loaded from bytes. One `stat` of the path; cheap enough to call between requests.
    ///
    /// A server uses it to reload a model that was replaced. For a mapped model it also warns of
    /// the danger docs/ROBUSTNESS.md describes: a file written in place changes the weights under
    /// the running model. Changes made within the file system's timestamp granularity of the open
    /// itself (a few milliseconds) can go unnoticed.
    pub fn file_changed(&self) -> bool {
        self.inner.origin.as_ref().is_some_and(Origin::changed)
    }

    /// Checks both checksums again, over the bytes the model reads now, reporting progress as
    /// `(bytes done, total)`: for a mapped model this notices a file written to in place since it
    /// was opened. A mapped file found shorter than at open is reported as an error before any of
    /// it is read (reading past its new end would crash the process).
    pub fn verify_data(&self, progress: impl FnMut(u64, u64)) -> Result<()> {
        let header = &self.inner.header;
        self.check_not_truncated()?;
        format::verify_meta_crc(self.bytes(), header)?;
        format::verify_data_crc(self.bytes(), header, progress)
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The file's length now, checked against its length at open (a mapped model only): reading
    /// past the new end of a truncated file would crash the process.
    fn check_not_truncated(&self) -> Result<()> {
        self.inner.check_not_truncated()
    }

    fn bytes(&self) -> &[u8] {
        self.inner.storage.bytes()
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

    /// Whether scoring requests cold rows ahead (`LoadOptions::fault_ahead`, mapped files).
    pub(crate) fn fault_ahead(&self) -> bool {
        self.inner.fault_ahead
    }

    /// Asks the kernel to start reading the page(s) of row `id` of `table` (a valid id) if they
    /// are not in memory, without waiting for them. Only a hint: a refusal changes nothing.
    pub(crate) fn request_row(&self, table: &TensorRef, id: i64) {
        let len = table.cols * table.dtype.size() as usize;
        let at = table.offset + id as usize * len;
        let _ = memory::advise(&self.bytes()[at..at + len], memory::Advice::WillNeed);
    }

    /// A dense layer's weight: f32 / f16 panels, or int8 panels (`None`).
    pub(crate) fn panels(&self, t: &TensorRef) -> Option<Panels<'_>> {
        let len = t.cols.div_ceil(16) * 16 * t.rows;
        match t.dtype {
            DType::F32 => Some(Panels::F32(self.f32s(t, len))),
            DType::F16 => Some(Panels::F16(self.f16s(t, len))),
            DType::I8 => None,
        }
    }

    /// An int8 dense layer's panels (`int8::weight_bytes(k, n)` bytes, checked at load).
    pub(crate) fn int8_panels(&self, t: &TensorRef) -> &[u8] {
        &self.bytes()[t.offset..t.offset + int8::weight_bytes(t.rows, t.cols)]
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
    /// The int8 kernels' instruction set (used by the file's i8 layers, if it has any).
    pub fn int8_level(&self) -> I8Level {
        self.inner.int8
    }
    /// Whether any dense layer of the file is int8.
    pub fn has_int8_layers(&self) -> bool {
        self.inner.plan.quant_slots > 0
    }
    /// The input features, in the order scoring calls take them.
    pub fn inputs(&self) -> &[Feature] {
        &self.inner.graph.features
    }
    /// Index of the input named `name`.
    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs().iter().position(|f| &*f.name == name)
    }
    /// Writes the embedding vector scoring looks up for `id` of sparse or sequence input `input`
    /// (`width` floats; f16 tables widened to f32) to `out`. A caller that passes embedding
    /// vectors instead of ids (`Input::Floats`, `Input::RaggedFloats`) gets the same scores, bit
    /// for bit, by passing exactly these; this is how a server moves the tables into a key-value
    /// store of its own (docs/C_API.md, "Embedding vectors from the caller").
    pub fn embedding_row(&self, input: usize, id: i64, out: &mut [f32]) -> Result<()> {
        let Some(f) = self.inputs().get(input) else {
            return Err(Error::UnknownInput(format!("#{input}")));
        };
        let Some(table) = f.table else {
            return Err(Error::WrongInputKind {
                feature: f.name.clone(),
                expected: "embedding vectors: it has no table in this file",
            });
        };
        let e = if f.ids_through_f32 {
            id as f32 as i64
        } else {
            id
        };
        if e < 0 || e as u64 >= table.rows as u64 {
            return Err(Error::IdOutOfRange {
                feature: f.name.clone(),
                sample: 0,
                position: 0,
                id,
                vocab: table.rows,
            });
        }
        if out.len() != table.cols {
            return Err(Error::WrongLength {
                what: crate::error::BufferName::Output,
                expected: table.cols,
                got: out.len(),
            });
        }
        let base = e as usize * table.cols;
        match table.dtype {
            DType::F32 => out.copy_from_slice(&self.f32s(&table, base + table.cols)[base..]),
            DType::F16 => {
                let bits = &self.f16s(&table, base + table.cols)[base..];
                crate::kernels::widen_f16(self.inner.simd, bits, out);
            }
            DType::I8 => unreachable!("tables are plain f32 or f16 (checked at load)"),
        }
        Ok(())
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
                graph::Act::DicePerSample { .. } => 1,
                graph::Act::DiceBn { param } => 3 * param.cols as u64,
                _ => 0,
            };
        }
        n
    }
    /// Multiply-adds ×2 per sample in the dense layers, gate and attention mixtures and attention
    /// logits.
    pub fn flops_per_sample(&self) -> u64 {
        let p = &self.inner.plan;
        p.ops
            .iter()
            .map(|op| match op {
                plan::Op::Dense { layer, .. } => 2 * (layer.k * layer.n) as u64,
                plan::Op::Mix { experts, width, .. } => 2 * (experts.len() * width) as u64,
                plan::Op::Dots { pairs, dim, .. } => (pairs.len() * dim) as u64,
                _ => 0,
            })
            .sum()
    }
}

impl Inner {
    fn check_not_truncated(&self) -> Result<()> {
        if let Some(len) = self.storage.mapped_file_len() {
            let len = len.map_err(|source| Error::Io {
                path: self.origin.as_ref().map_or_else(String::new, |o| o.shown()),
                source,
            })?;
            if len < self.header.file_size {
                return Err(invalid!(
                    "the mapped file was truncated to {len} bytes since it was opened ({} bytes)",
                    self.header.file_size
                ));
            }
        }
        Ok(())
    }

    /// The advice a mapped model keeps: the kernel's default readahead, except for the tables
    /// (random access, unless `table_readahead`). Advice is only a hint: a refusal changes nothing
    /// that matters for correctness.
    fn advise_default(&self) {
        if !self.storage.is_mapped() {
            return;
        }
        let bytes = self.storage.bytes();
        let _ = memory::advise(bytes, memory::Advice::Normal);
        if !self.table_readahead {
            for t in &self.tables {
                let _ = memory::advise(&bytes[t.clone()], memory::Advice::Random);
            }
        }
    }

    /// `Model::warm`. For a mapped file the tables lose their random-access advice for the pass
    /// and get it back afterwards: under `MADV_RANDOM` the kernel maps one page per fault instead
    /// of the cached pages around it (fault-around), and the pass took 7.3 s instead of 4.0 s
    /// over a 4 GiB file (docs/PERFORMANCE.md, "Cold start").
    fn warm(&self, progress: &mut dyn FnMut(u64, u64) -> ControlFlow<()>) -> Result<()> {
        self.check_not_truncated()?;
        let mapped = self.storage.is_mapped();
        if mapped {
            let _ = memory::advise(self.storage.bytes(), memory::Advice::Normal);
        }
        let outcome = memory::touch(self.storage.bytes(), mapped, progress);
        self.advise_default();
        match outcome {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(Error::Cancelled),
        }
    }
}

/// The byte range of every embedding table, each once (features may share a table).
fn table_ranges(graph: &Graph) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = graph
        .features
        .iter()
        .filter_map(|f| f.table)
        .map(|t| t.offset..t.offset + t.rows * t.cols * t.dtype.size() as usize)
        .collect();
    ranges.sort_by_key(|r| r.start);
    ranges.dedup();
    ranges
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

/// Every int8 layer's panels must pass `int8::check_weights` (scales finite and positive, codes
/// within ±127, zero padding, column sums that are the sums of the codes): a hostile file could
/// otherwise feed the kernels values their overflow bound does not cover. Reads the int8 weights
/// once (they are a quarter of the f32 bytes; tables are not read). Input scales (format 1.2)
/// must be finite and > 0: the quantizer multiplies by them, and the weights were divided by them.
fn check_int8_weights(graph: &Graph, bytes: &[u8]) -> Result<()> {
    for (i, mlp) in graph.mlps.iter().enumerate() {
        for (j, l) in mlp.layers.iter().enumerate() {
            if l.weight.dtype != DType::I8 {
                continue;
            }
            let t = &l.weight;
            let w = bytes
                .get(t.offset..t.offset + int8::weight_bytes(t.rows, t.cols))
                .ok_or_else(|| {
                    Error::InvalidFile(format!("MLP {i} layer {j}: weight out of range"))
                })?;
            int8::check_weights(w, t.rows, t.cols)
                .map_err(|e| Error::InvalidFile(format!("MLP {i} layer {j}: i8 weight: {e}")))?;
            if let Some(r) = &l.input_scale {
                let bytes = (bytes.get(r.offset..r.offset + 4 * r.cols)).ok_or_else(|| {
                    Error::InvalidFile(format!("MLP {i} layer {j}: input scales out of range"))
                })?;
                for (c, v) in bytes.chunks_exact(4).enumerate() {
                    let v = f32::from_le_bytes(v.try_into().expect("4 bytes"));
                    if !(v.is_finite() && v > 0.0) {
                        return Err(Error::InvalidFile(format!(
                            "MLP {i} layer {j}: input scale of column {c} is {v}, not finite and > 0"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}
