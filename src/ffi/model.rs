//! The model handle: open, clone, free and introspection.

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Arc;

use super::version::simd_name;
use super::{fail, guard, ple_status, Lossy};
use crate::format::DType;
use crate::model::{InputKind, LoadOptions, Model, Pooling};

/// Flag for `ple_model_open`: also verify the checksum of the data section (reads the whole file
/// once; without it only the header and metadata are verified, so large models open in
/// milliseconds).
pub const PLE_OPEN_VERIFY_DATA: u32 = 1;
/// Flag for `ple_model_open`: read the file into memory instead of mapping it, so that writes to
/// the file cannot reach the model: a mapped model reads bytes written in place (wrong scores) and
/// crashes (SIGBUS) if the file is truncated. Use it where in-place writes cannot be ruled out
/// (NFS, some container overlays, tools that rewrite files). The header and metadata are checked
/// before the tensor data are read, and never more than the header declares is read. Implied by
/// `ple_model_open_memory`.
pub const PLE_OPEN_READ_INTO_MEMORY: u32 = 2;
/// Flag for `ple_model_open`: bring every page of the model into memory before returning (as
/// `ple_model_warm` does), so the first requests do not wait for page faults; opening then takes
/// about as long as reading the file. To keep serving an old model meanwhile, open without it and
/// call `ple_model_warm` on a background thread instead.
pub const PLE_OPEN_WARM: u32 = 4;
/// Flag for `ple_model_open`: lock the model's pages in RAM (`mlock`, after warming them), so the
/// kernel never evicts them while the model lives. The pages count against the process's
/// `RLIMIT_MEMLOCK` (unless it has `CAP_IPC_LOCK`); a refusal fails the open with
/// `PLE_STATUS_SYSTEM` and a message naming `RLIMIT_MEMLOCK` and its value.
pub const PLE_OPEN_LOCK: u32 = 8;
/// Flag for `ple_model_open`: keep the kernel's readahead for the embedding tables of a mapped
/// file. Without it the tables are advised random access (`MADV_RANDOM`): rows are read one at a
/// time at random ids, so readahead around a cold row mostly reads rows nobody asked for.
pub const PLE_OPEN_TABLE_READAHEAD: u32 = 16;
const KNOWN_FLAGS: u32 = PLE_OPEN_VERIFY_DATA
    | PLE_OPEN_READ_INTO_MEMORY
    | PLE_OPEN_WARM
    | PLE_OPEN_LOCK
    | PLE_OPEN_TABLE_READAHEAD;

/// Progress of `ple_model_warm`: called with the caller's `ctx`, the bytes done and the total.
/// Return 0 to go on, nonzero to stop the warm-up (`PLE_STATUS_CANCELLED`).
pub type ple_progress_fn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, done: u64, total: u64) -> i32>;

/// How much of a model is resident in RAM (`ple_model_residency`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ple_residency {
    /// Bytes of the whole model (the file's size).
    pub total_bytes: u64,
    /// Of those, bytes resident in RAM now.
    pub resident_bytes: u64,
    /// Bytes of the embedding tables (a table shared by several inputs counted once).
    pub table_bytes: u64,
    /// Of those, bytes resident in RAM now.
    pub table_resident_bytes: u64,
}

/// What a caller passes for an input feature.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ple_input_kind {
    /// Not an input (returned for a NULL model or an index out of range).
    None = 0,
    /// Floats: `ple_model_input_width` per sample, in a column's `floats`.
    Dense = 1,
    /// One id per sample, looked up in an embedding table, in a column's `ids`.
    Sparse = 2,
    /// `ple_model_input_max_len` ids per sample (padded), looked up and pooled, in `ids`.
    Sequence = 3,
}

/// Element type of a model's dense-layer weights.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ple_dtype {
    /// Returned for a NULL model.
    None = 0,
    /// 32-bit floats.
    F32 = 1,
    /// IEEE binary16 (widened to f32 while scoring).
    F16 = 2,
    /// The file mixes layers of different dtypes (f32, f16, int8).
    Mixed = 3,
    /// Every dense layer is int8 (quantized; format 1.1).
    I8 = 4,
}

/// A loaded model: immutable, reference counted and safe to use from any number of threads at
/// once. Opaque.
pub struct ple_model {
    pub(crate) model: Model,
    name: CString,
    inputs: Vec<InputNames>,
    /// Input indices sorted by name, for lookups by name without allocating.
    by_name: Vec<usize>,
    outputs: Vec<Slot>,
    gates: Vec<Slot>,
}

struct InputNames {
    name: CString,
    pooling: Option<&'static CStr>,
}

/// A named range of floats in a sample's output (or gate-weights) row.
struct Slot {
    name: CString,
    offset: usize,
    len: usize,
}

/// One slot per `(name, len)`, laid out one after another from offset 0.
fn slots<'a>(
    what: &str,
    items: impl Iterator<Item = (&'a str, usize)>,
) -> Result<Vec<Slot>, crate::Error> {
    let mut offset = 0;
    items
        .map(|(name, len)| {
            let slot = Slot {
                name: c_string(what, name)?,
                offset,
                len,
            };
            offset += len;
            Ok(slot)
        })
        .collect()
}

fn c_string(what: &str, s: &str) -> Result<CString, crate::Error> {
    CString::new(s)
        .map_err(|_| crate::Error::InvalidFile(format!("{what} '{s}' contains a NUL byte")))
}

impl ple_model {
    fn new(model: Model) -> Result<ple_model, crate::Error> {
        let inputs = model
            .inputs()
            .iter()
            .map(|f| {
                Ok(InputNames {
                    name: c_string("input name", &f.name)?,
                    pooling: f.pooling.map(|p| match p {
                        Pooling::Sum => c"sum",
                        Pooling::Mean => c"mean",
                        Pooling::Max => c"max",
                    }),
                })
            })
            .collect::<Result<Vec<_>, crate::Error>>()?;
        let mut by_name: Vec<usize> = (0..inputs.len()).collect();
        by_name.sort_by(|&a, &b| inputs[a].name.cmp(&inputs[b].name));
        let outputs = slots("output name", model.outputs())?;
        let gates = slots(
            "gate name",
            model.gates().iter().map(|g| (&*g.name, g.width)),
        )?;
        Ok(ple_model {
            name: c_string("model name", model.name())?,
            model,
            inputs,
            by_name,
            outputs,
            gates,
        })
    }

    /// Index of the input named `name` (binary search; no allocation).
    pub(crate) fn input_index(&self, name: &[u8]) -> Option<usize> {
        self.by_name
            .binary_search_by(|&i| self.inputs[i].name.to_bytes().cmp(name))
            .ok()
            .map(|k| self.by_name[k])
    }
}

/// Shared tail of the two open functions.
///
/// # Safety
/// `out_model` is non-NULL and valid for a write.
unsafe fn finish_open(
    loaded: Result<Model, crate::Error>,
    out_model: *mut *const ple_model,
) -> ple_status {
    match loaded.and_then(ple_model::new) {
        Ok(m) => {
            // SAFETY: checked non-NULL by the caller; writable per the function's contract.
            unsafe { *out_model = Arc::into_raw(Arc::new(m)) };
            ple_status::Ok
        }
        Err(e) => fail(ple_status::of(&e), format_args!("{e}")),
    }
}

fn options(flags: u32, fn_name: &str) -> Result<LoadOptions, ple_status> {
    if flags & !KNOWN_FLAGS != 0 {
        return Err(fail(
            ple_status::InvalidArgument,
            format_args!("{fn_name}: unknown flag bits {:#x}", flags & !KNOWN_FLAGS),
        ));
    }
    Ok(LoadOptions {
        verify_data: flags & PLE_OPEN_VERIFY_DATA != 0,
        read_into_memory: flags & PLE_OPEN_READ_INTO_MEMORY != 0,
        simd: None,
        warm: flags & PLE_OPEN_WARM != 0,
        lock: flags & PLE_OPEN_LOCK != 0,
        table_readahead: flags & PLE_OPEN_TABLE_READAHEAD != 0,
        ..LoadOptions::default()
    })
}

/// Opens, validates and plans the model file at `path` (memory-mapped unless
/// `PLE_OPEN_READ_INTO_MEMORY` is given). `flags` is 0 or a bitwise OR of `PLE_OPEN_*`. On success
/// writes a new handle (reference count 1) to `*out_model`; release it with `ple_model_free`.
///
/// `path` must name a regular file (symbolic links are followed): a device, FIFO, socket or
/// directory is refused with `PLE_STATUS_IO` before anything is read from it (a FIFO is never
/// opened, so this cannot block).
///
/// Deploy new model files by writing a new file and renaming it over the old one: a mapped file
/// written in place changes the running model's weights, and truncating it crashes the process
/// (SIGBUS). `ple_model_file_changed` tells when the file changed.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out_model` is NULL or valid for a write.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_model_open(
    path: *const c_char,
    flags: u32,
    out_model: *mut *const ple_model,
) -> ple_status {
    guard("ple_model_open", ple_status::Panic, || {
        if path.is_null() || out_model.is_null() {
            return fail(
                ple_status::NullArgument,
                format_args!("ple_model_open: path and out_model must not be NULL"),
            );
        }
        let opts = match options(flags, "ple_model_open") {
            Ok(o) => o,
            Err(s) => return s,
        };
        // SAFETY: non-NULL and NUL-terminated per the contract.
        let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
        #[cfg(unix)]
        let path = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes);
        #[cfg(not(unix))]
        let path = match std::str::from_utf8(bytes) {
            Ok(p) => p,
            Err(_) => {
                return fail(
                    ple_status::InvalidArgument,
                    format_args!("ple_model_open: path '{}' is not UTF-8", Lossy(bytes)),
                )
            }
        };
        // SAFETY: `out_model` is non-NULL (checked above) and writable per the contract.
        unsafe { finish_open(Model::open_with(path, &opts), out_model) }
    })
}

/// Loads a model from `len` bytes at `data`. The bytes are copied into memory the model owns, so
/// the caller may free or reuse `data` as soon as this returns. `flags` as for `ple_model_open`
/// (`PLE_OPEN_READ_INTO_MEMORY` is implied). On success writes a new handle (reference count 1) to
/// `*out_model`.
///
/// # Safety
/// `data` is NULL or valid for reading `len` bytes; `out_model` is NULL or valid for a write.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_model_open_memory(
    data: *const c_void,
    len: usize,
    flags: u32,
    out_model: *mut *const ple_model,
) -> ple_status {
    guard("ple_model_open_memory", ple_status::Panic, || {
        if out_model.is_null() || (data.is_null() && len > 0) {
            return fail(
                ple_status::NullArgument,
                format_args!(
                    "ple_model_open_memory: data (with len > 0) and out_model must not be NULL"
                ),
            );
        }
        if len > isize::MAX as usize {
            return fail(
                ple_status::InvalidArgument,
                format_args!("ple_model_open_memory: len {len} is too large"),
            );
        }
        let opts = match options(flags, "ple_model_open_memory") {
            Ok(o) => o,
            Err(s) => return s,
        };
        let bytes: &[u8] = if len == 0 {
            &[]
        } else {
            // SAFETY: non-NULL, `len` readable bytes per the contract, `len <= isize::MAX`.
            unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }
        };
        // SAFETY: `out_model` is non-NULL (checked above) and writable per the contract.
        unsafe { finish_open(Model::from_bytes_with(bytes, &opts), out_model) }
    })
}

/// Adds a reference to `model` and returns it (the same pointer). Each successful clone needs its
/// own `ple_model_free`. Returns NULL if `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live handle from this library.
#[no_mangle]
pub unsafe extern "C" fn ple_model_clone(model: *const ple_model) -> *const ple_model {
    guard("ple_model_clone", std::ptr::null(), || {
        if model.is_null() {
            fail(
                ple_status::NullArgument,
                format_args!("ple_model_clone: model is NULL"),
            );
            return std::ptr::null();
        }
        // SAFETY: a live handle is a pointer from `Arc::into_raw` with a nonzero count.
        unsafe { Arc::increment_strong_count(model) };
        model
    })
}

/// Releases one reference to `model`; the model is destroyed when the last reference and the last
/// session using it are gone. NULL is accepted and ignored.
///
/// # Safety
/// `model` is NULL or a live handle, and is not used again after this call (through this
/// reference).
#[no_mangle]
pub unsafe extern "C" fn ple_model_free(model: *const ple_model) {
    guard("ple_model_free", (), || {
        if !model.is_null() {
            // SAFETY: a live handle owns one strong count, released here exactly once.
            drop(unsafe { Arc::from_raw(model) });
        }
    })
}

/// The indexed lists of a model that getters address.
#[derive(Clone, Copy)]
enum List {
    Inputs,
    Outputs,
    Gates,
    Layers,
}

impl List {
    fn len(self, m: &ple_model) -> usize {
        match self {
            List::Inputs => m.inputs.len(),
            List::Outputs => m.outputs.len(),
            List::Gates => m.gates.len(),
            List::Layers => m.model.graph().mlps.iter().map(|x| x.layers.len()).sum(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            List::Inputs => "inputs",
            List::Outputs => "outputs",
            List::Gates => "gates",
            List::Layers => "dense layers",
        }
    }
}

/// Runs the body of a getter: a NULL model, or an `index` outside `list`, yields `fallback` and
/// records why as this thread's last error; otherwise `f(model, index)`.
///
/// # Safety
/// `model` is NULL or a live handle.
unsafe fn get<R: Copy>(
    fn_name: &str,
    model: *const ple_model,
    item: Option<(List, usize)>,
    fallback: R,
    f: impl FnOnce(&ple_model, usize) -> R,
) -> R {
    guard(fn_name, fallback, || {
        // SAFETY: NULL or a live handle per this function's contract; live handles point to an
        // `Arc`'s value.
        let Some(m) = (unsafe { model.as_ref() }) else {
            fail(
                ple_status::NullArgument,
                format_args!("{fn_name}: model is NULL"),
            );
            return fallback;
        };
        let Some((list, index)) = item else {
            return f(m, 0);
        };
        let n = list.len(m);
        if index >= n {
            fail(
                ple_status::InvalidArgument,
                format_args!(
                    "{fn_name}: index {index} is out of range (the model has {n} {})",
                    list.name()
                ),
            );
            return fallback;
        }
        f(m, index)
    })
}

/// The body of a getter: `getter!(fn_name(model) or FALLBACK => |m| value)` for a fact of the
/// model, `getter!(fn_name(model, Inputs[index]) or FALLBACK => |m, i| value)` for item `index` of
/// a list. `fn_name` is the enclosing function: its name goes into the error message.
macro_rules! getter {
    ($fn_name:ident($model:ident) or $fallback:expr => |$m:ident| $value:expr) => {{
        // A misspelt name does not compile.
        let _ = $fn_name;
        // SAFETY: every getter takes a `model` that is NULL or a live handle.
        unsafe {
            get(stringify!($fn_name), $model, None, $fallback, |$m, _| {
                $value
            })
        }
    }};
    ($fn_name:ident($model:ident, $list:ident[$index:ident]) or $fallback:expr
        => |$m:ident, $i:ident| $value:expr) => {{
        let _ = $fn_name;
        // SAFETY: as above.
        unsafe {
            get(
                stringify!($fn_name),
                $model,
                Some((List::$list, $index)),
                $fallback,
                |$m, $i| $value,
            )
        }
    }};
}

/// The model's name as stored in the file; NULL if `model` is NULL. Like every string a model
/// returns, it stays valid while any reference to the model (or a session using it) is alive.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_name(model: *const ple_model) -> *const c_char {
    getter!(ple_model_name(model) or std::ptr::null() => |m| m.name.as_ptr())
}

/// Weight dtype of the dense layers (`PLE_DTYPE_NONE` if `model` is NULL).
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_dtype(model: *const ple_model) -> ple_dtype {
    getter!(ple_model_dtype(model) or ple_dtype::None => |m| match m.model.weight_dtype() {
        Some(DType::F32) => ple_dtype::F32,
        Some(DType::F16) => ple_dtype::F16,
        Some(DType::I8) => ple_dtype::I8,
        None => ple_dtype::Mixed,
    })
}

/// Dense layer `i` of the file: MLP by MLP in file order, each MLP's layers in order (FORMAT.md
/// §3.6; `ple inspect --json` lists them the same way).
fn layer(m: &ple_model, i: usize) -> &crate::model::graph::Layer {
    let mut layers = m.model.graph().mlps.iter().flat_map(|x| &x.layers);
    layers.nth(i).expect("index checked against List::Layers")
}

/// Number of dense layers in the file (every MLP's, in file order); 0 if `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_layer_count(model: *const ple_model) -> usize {
    getter!(ple_model_layer_count(model) or 0 => |m| List::Layers.len(m))
}

/// Storage precision of dense layer `index` (MLP by MLP in file order): `PLE_DTYPE_F32`, `_F16` or
/// `_I8`; `PLE_DTYPE_NONE` if `model` is NULL or `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_layer_dtype(model: *const ple_model, index: usize) -> ple_dtype {
    getter!(ple_model_layer_dtype(model, Layers[index]) or ple_dtype::None
    => |m, i| match layer(m, i).weight.dtype {
        DType::F32 => ple_dtype::F32,
        DType::F16 => ple_dtype::F16,
        DType::I8 => ple_dtype::I8,
    })
}

/// Inputs (k) of dense layer `index`; 0 if `model` is NULL or `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_layer_inputs(model: *const ple_model, index: usize) -> usize {
    getter!(ple_model_layer_inputs(model, Layers[index]) or 0 => |m, i| layer(m, i).k)
}

/// Outputs (n) of dense layer `index`; 0 if `model` is NULL or `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_layer_outputs(model: *const ple_model, index: usize) -> usize {
    getter!(ple_model_layer_outputs(model, Layers[index]) or 0 => |m, i| layer(m, i).n)
}

/// The instruction set of the int8 kernels ("scalar", "avx2", "avx-vnni", "avx512-vnni" or "amx";
/// static),
/// used by the file's `PLE_DTYPE_I8` layers; NULL if `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_int8_level(model: *const ple_model) -> *const c_char {
    getter!(ple_model_int8_level(model) or std::ptr::null() => |m| {
        use crate::kernels::int8::I8Level;
        match m.model.int8_level() {
            I8Level::Scalar => c"scalar".as_ptr(),
            I8Level::Avx2 => c"avx2".as_ptr(),
            I8Level::AvxVnni => c"avx-vnni".as_ptr(),
            I8Level::Avx512Vnni => c"avx512-vnni".as_ptr(),
            I8Level::Amx => c"amx".as_ptr(),
        }
    })
}

/// The SIMD level this model's kernels use ("scalar", "avx2", "avx512" or "neon"; static); NULL if
/// `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_simd_level(model: *const ple_model) -> *const c_char {
    getter!(ple_model_simd_level(model) or std::ptr::null() => |m| simd_name(m.model.simd_level()))
}

/// Number of tasks (towers); 0 if `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_task_count(model: *const ple_model) -> usize {
    getter!(ple_model_task_count(model) or 0 => |m| m.model.n_tasks())
}

/// Number of input features, i.e. of columns `ple_session_run` takes; 0 if `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_input_count(model: *const ple_model) -> usize {
    getter!(ple_model_input_count(model) or 0 => |m| m.inputs.len())
}

/// Name of input `index` (in the model's column order); NULL if `model` is NULL or `index` is out
/// of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_input_name(
    model: *const ple_model,
    index: usize,
) -> *const c_char {
    getter!(ple_model_input_name(model, Inputs[index]) or std::ptr::null()
        => |m, i| m.inputs[i].name.as_ptr())
}

/// Kind of input `index`; `PLE_INPUT_KIND_NONE` if `model` is NULL or `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_input_kind(
    model: *const ple_model,
    index: usize,
) -> ple_input_kind {
    getter!(ple_model_input_kind(model, Inputs[index]) or ple_input_kind::None
    => |m, i| match m.model.inputs()[i].kind {
        InputKind::Dense => ple_input_kind::Dense,
        InputKind::Sparse => ple_input_kind::Sparse,
        InputKind::Sequence => ple_input_kind::Sequence,
    })
}

/// Floats input `index` contributes to the model: the dense width, or the embedding dimension of a
/// sparse or sequence feature; 0 if `model` is NULL or `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_input_width(model: *const ple_model, index: usize) -> usize {
    getter!(ple_model_input_width(model, Inputs[index]) or 0
        => |m, i| m.model.inputs()[i].width)
}

/// Values the caller passes per sample for input `index`, so its column holds `batch` times this
/// many: the width for dense, 1 for sparse, the maximum length for sequence features; 0 if `model`
/// is NULL or `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_input_values_per_sample(
    model: *const ple_model,
    index: usize,
) -> usize {
    getter!(ple_model_input_values_per_sample(model, Inputs[index]) or 0
        => |m, i| m.model.inputs()[i].values_per_sample())
}

/// Rows of input `index`'s embedding table: valid ids are `0 .. vocab_size - 1` (0 for dense
/// inputs, a NULL model or an index out of range).
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_input_vocab_size(
    model: *const ple_model,
    index: usize,
) -> usize {
    getter!(ple_model_input_vocab_size(model, Inputs[index]) or 0
        => |m, i| m.model.inputs()[i].vocab())
}

/// Ids per sample of sequence input `index` (padded to this length); 1 for sparse and 0 for dense
/// inputs, a NULL model or an index out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_input_max_len(model: *const ple_model, index: usize) -> usize {
    getter!(ple_model_input_max_len(model, Inputs[index]) or 0
        => |m, i| m.model.inputs()[i].max_len)
}

/// Whether input `index`'s ids pass through f32 before the lookup (DeepCTR-Torch models: ids above
/// 2^24 are rounded exactly as in training, and the range check sees the rounded id); false for
/// other inputs, a NULL model or an index out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_input_ids_through_f32(
    model: *const ple_model,
    index: usize,
) -> bool {
    getter!(ple_model_input_ids_through_f32(model, Inputs[index]) or false
        => |m, i| m.model.inputs()[i].ids_through_f32)
}

/// Pooling of sequence input `index` ("sum", "mean" or "max"; static); NULL for other inputs, a
/// NULL model or an index out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_input_pooling(
    model: *const ple_model,
    index: usize,
) -> *const c_char {
    getter!(ple_model_input_pooling(model, Inputs[index]) or std::ptr::null()
        => |m, i| m.inputs[i].pooling.map_or(std::ptr::null(), CStr::as_ptr))
}

/// The padding id of sequence input `index`: positions holding it are ignored by the pooling
/// (an all-padding row pools to zeros for sum and mean). Writes it to `*out_pad_id` and returns
/// true; returns false and writes nothing if the input has no padding id (every id counts), or for
/// a NULL argument or an index out of range.
///
/// # Safety
/// `model` is NULL or a live handle; `out_pad_id` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn ple_model_input_pad_id(
    model: *const ple_model,
    index: usize,
    out_pad_id: *mut i64,
) -> bool {
    let pad = getter!(ple_model_input_pad_id(model, Inputs[index]) or None
        => |m, i| m.model.inputs()[i].pad_id);
    match pad {
        Some(id) if !out_pad_id.is_null() => {
            // SAFETY: non-NULL and writable per the contract.
            unsafe { *out_pad_id = id };
            true
        }
        Some(_) => {
            fail(
                ple_status::NullArgument,
                format_args!("ple_model_input_pad_id: out_pad_id is NULL"),
            );
            false
        }
        None => false,
    }
}

/// Whether sparse or sequence input `index` has its embedding table in the file. False for a
/// feature whose vectors the caller passes (exported without its table), for dense inputs, and
/// for a NULL model or an index out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_input_has_table(model: *const ple_model, index: usize) -> bool {
    getter!(ple_model_input_has_table(model, Inputs[index]) or false
        => |m, i| m.model.inputs()[i].table.is_some())
}

/// Writes the embedding vector scoring looks up for `id` of sparse or sequence input `index` to
/// `out` (`out_len` must be `ple_model_input_width`; f16 tables widened to f32). A caller passing
/// embedding vectors instead of ids (`ple_column.floats`) gets the same scores, bit for bit, by
/// passing exactly these: how a server moves the tables into a key-value store of its own.
/// Fails with `PLE_STATUS_WRONG_INPUT_KIND` for an input without a table in the file,
/// `PLE_STATUS_ID_OUT_OF_RANGE`, `PLE_STATUS_WRONG_LENGTH`, `PLE_STATUS_UNKNOWN_INPUT` for an
/// index out of range; writes nothing then.
///
/// # Safety
/// `model` is NULL or a live handle; `out` is NULL or valid for writing `out_len` floats.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_model_input_embedding(
    model: *const ple_model,
    index: usize,
    id: i64,
    out: *mut f32,
    out_len: usize,
) -> ple_status {
    const NAME: &str = "ple_model_input_embedding";
    guard(NAME, ple_status::Panic, || {
        // SAFETY: NULL or a live handle per the contract.
        let Some(m) = (unsafe { model.as_ref() }) else {
            return fail(
                ple_status::NullArgument,
                format_args!("{NAME}: model is NULL"),
            );
        };
        if out.is_null() || !out.is_aligned() {
            return fail(
                ple_status::NullArgument,
                format_args!("{NAME}: out is NULL or misaligned"),
            );
        }
        if out_len > isize::MAX as usize / 4 {
            return fail(
                ple_status::InvalidArgument,
                format_args!("{NAME}: out has an impossibly large length"),
            );
        }
        // SAFETY: non-NULL, aligned, in size (checked), valid for `out_len` writes per the
        // contract.
        let out = unsafe { std::slice::from_raw_parts_mut(out, out_len) };
        match m.model.embedding_row(index, id, out) {
            Ok(()) => ple_status::Ok,
            Err(e) => fail(ple_status::of(&e), format_args!("{NAME}: {e}")),
        }
    })
}

/// Looks up an input by name and writes its index to `*out_index`. Returns
/// `PLE_STATUS_UNKNOWN_INPUT` if the model has no input of that name.
///
/// # Safety
/// `model` is NULL or a live handle; `name` is NULL or a NUL-terminated string; `out_index` is
/// NULL or valid for a write.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_model_input_index(
    model: *const ple_model,
    name: *const c_char,
    out_index: *mut usize,
) -> ple_status {
    guard("ple_model_input_index", ple_status::Panic, || {
        if model.is_null() || name.is_null() || out_index.is_null() {
            return fail(
                ple_status::NullArgument,
                format_args!("ple_model_input_index: model, name and out_index must not be NULL"),
            );
        }
        // SAFETY: non-NULL live handle per the contract.
        let m = unsafe { &*model };
        // SAFETY: non-NULL and NUL-terminated per the contract.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        match m.input_index(name) {
            Some(i) => {
                // SAFETY: non-NULL and writable per the contract.
                unsafe { *out_index = i };
                ple_status::Ok
            }
            None => fail(
                ple_status::UnknownInput,
                format_args!("the model has no input named '{}'", Lossy(name)),
            ),
        }
    })
}

/// Floats per sample in an output buffer (the sum of every output's length); 0 if `model` is NULL.
/// An output buffer for `batch` samples holds `batch * ple_model_output_width(model)` floats,
/// sample after sample.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_output_width(model: *const ple_model) -> usize {
    getter!(ple_model_output_width(model) or 0 => |m| m.model.output_width())
}

/// Number of outputs (one per task, usually); 0 if `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_output_count(model: *const ple_model) -> usize {
    getter!(ple_model_output_count(model) or 0 => |m| m.outputs.len())
}

/// Name of output `index`; NULL if `model` is NULL or `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_output_name(
    model: *const ple_model,
    index: usize,
) -> *const c_char {
    getter!(ple_model_output_name(model, Outputs[index]) or std::ptr::null()
        => |m, i| m.outputs[i].name.as_ptr())
}

/// Position of output `index`'s first float within a sample's row of the output buffer; 0 if
/// `model` is NULL or `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_output_offset(model: *const ple_model, index: usize) -> usize {
    getter!(ple_model_output_offset(model, Outputs[index]) or 0
        => |m, i| m.outputs[i].offset)
}

/// Floats output `index` occupies per sample (1 for a probability); 0 if `model` is NULL or
/// `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_output_len(model: *const ple_model, index: usize) -> usize {
    getter!(ple_model_output_len(model, Outputs[index]) or 0
        => |m, i| m.outputs[i].len)
}

/// Floats per sample in a gate-weights buffer (0 for models without gates, or a NULL model).
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_gate_width(model: *const ple_model) -> usize {
    getter!(ple_model_gate_width(model) or 0 => |m| m.model.gate_width())
}

/// Number of gates whose weights a gate-weights buffer receives; 0 if `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_gate_count(model: *const ple_model) -> usize {
    getter!(ple_model_gate_count(model) or 0 => |m| m.gates.len())
}

/// Name of gate `index` ("level0.task1", "level0.shared", ...); NULL if `model` is NULL or
/// `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_gate_name(
    model: *const ple_model,
    index: usize,
) -> *const c_char {
    getter!(ple_model_gate_name(model, Gates[index]) or std::ptr::null()
        => |m, i| m.gates[i].name.as_ptr())
}

/// Position of gate `index`'s first weight within a sample's row of the gate-weights buffer; 0 if
/// `model` is NULL or `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_gate_offset(model: *const ple_model, index: usize) -> usize {
    getter!(ple_model_gate_offset(model, Gates[index]) or 0
        => |m, i| m.gates[i].offset)
}

/// Weights gate `index` produces per sample (its number of experts); 0 if `model` is NULL or
/// `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_gate_len(model: *const ple_model, index: usize) -> usize {
    getter!(ple_model_gate_len(model, Gates[index]) or 0
        => |m, i| m.gates[i].len)
}

/// Whether the file `model` was opened from has changed since it was opened: its path now names
/// another file (renamed over, a symlink switched) or no file, or the file's size, modification
/// time or status-change time differ (it was written to in place, or truncated). False for a model
/// opened from memory, and for a NULL model (recorded in `ple_last_error`). One `stat` of the
/// path: cheap enough to call between requests.
///
/// A server polls it to reload a replaced model (examples/cpp/hot_reload.cpp). For a mapped model
/// a change in place is also a warning: the running model reads the new bytes, so its scores mix
/// old and new weights until it is replaced (docs/ROBUSTNESS.md). Changes made within the file
/// system's timestamp granularity of the open itself (a few milliseconds) can go unnoticed.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_file_changed(model: *const ple_model) -> bool {
    getter!(ple_model_file_changed(model) or false => |m| m.model.file_changed())
}

/// Checks the header, metadata and data checksums again over the bytes `model` reads now (the
/// whole file: as long as `PLE_OPEN_VERIFY_DATA` takes at open). For a mapped model this notices a
/// file written to in place since the open (`PLE_STATUS_CHECKSUM`); a mapped file that became
/// shorter is reported (`PLE_STATUS_INVALID_FILE`) without reading it, since reading past its new
/// end would crash the process. A model opened from memory or with `PLE_OPEN_READ_INTO_MEMORY`
/// owns its bytes, so this only re-checks that copy. Safe to call while other threads score.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_model_verify_data(model: *const ple_model) -> ple_status {
    guard("ple_model_verify_data", ple_status::Panic, || {
        // SAFETY: NULL or a live handle per the contract.
        let Some(m) = (unsafe { model.as_ref() }) else {
            return fail(
                ple_status::NullArgument,
                format_args!("ple_model_verify_data: model is NULL"),
            );
        };
        match m.model.verify_data(|_, _| {}) {
            Ok(()) => ple_status::Ok,
            Err(e) => fail(ple_status::of(&e), format_args!("{e}")),
        }
    })
}

/// Brings every page of `model` into memory, so the first requests after it find their table
/// rows resident instead of each waiting for a page fault (for a cold file, a disk read). For a
/// mapped model the kernel reads ahead of the pass and every page is touched, so it is mapped into
/// this process too; it takes about as long as reading the file sequentially. A model read into
/// memory is only touched.
///
/// Run it on a background thread after opening a new model version and switch traffic to the
/// model when it returns (examples/cpp/hot_reload.cpp): other threads may score with the same
/// model meanwhile (it only reads the bytes). `progress` (may be NULL) is called on this thread
/// with `progress_ctx` at the start and after every 8 MiB; a nonzero return stops the warm-up.
/// `cancel` (may be NULL) points to an `int` that another thread may set to nonzero (an aligned,
/// atomic store, e.g. `__atomic_store_n` or C11 `atomic_store` on an `atomic_int` of the same
/// size) to stop it; it is read before each 8 MiB. A stopped warm-up returns
/// `PLE_STATUS_CANCELLED`; the pages touched so far stay warm.
///
/// Returns `PLE_STATUS_INVALID_FILE` without reading anything if the mapped file became shorter
/// since it was opened (reading past its new end would crash the process). Warm pages stay
/// resident as long as the kernel keeps them: under memory pressure it may evict them again,
/// unless the model was opened with `PLE_OPEN_LOCK`.
///
/// # Safety
/// `model` is NULL or a live handle; `progress` is NULL or a function with this signature;
/// `cancel` is NULL or points to an aligned `int` that stays valid for the call.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_model_warm(
    model: *const ple_model,
    progress: ple_progress_fn,
    progress_ctx: *mut c_void,
    cancel: *const i32,
) -> ple_status {
    guard("ple_model_warm", ple_status::Panic, || {
        // SAFETY: NULL or a live handle per the contract.
        let Some(m) = (unsafe { model.as_ref() }) else {
            return fail(
                ple_status::NullArgument,
                format_args!("ple_model_warm: model is NULL"),
            );
        };
        let cancel = (!cancel.is_null()).then(|| {
            // SAFETY: non-NULL, aligned and valid for the call per the contract; other threads
            // only store to it atomically, so reading it as an atomic is sound.
            unsafe { std::sync::atomic::AtomicI32::from_ptr(cancel.cast_mut()) }
        });
        let mut stopped_by = "";
        let result = m.model.warm(|done, total| {
            if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed) != 0) {
                stopped_by = "its cancel flag was set";
                return std::ops::ControlFlow::Break(());
            }
            if let Some(f) = progress {
                // SAFETY: the caller's function with its own context, per the contract.
                if unsafe { f(progress_ctx, done, total) } != 0 {
                    stopped_by = "the progress callback returned nonzero";
                    return std::ops::ControlFlow::Break(());
                }
            }
            std::ops::ControlFlow::Continue(())
        });
        match result {
            Ok(()) => ple_status::Ok,
            Err(crate::Error::Cancelled) => fail(
                ple_status::Cancelled,
                format_args!("ple_model_warm: cancelled ({stopped_by})"),
            ),
            Err(e) => fail(ple_status::of(&e), format_args!("ple_model_warm: {e}")),
        }
    })
}

/// Writes how much of `model`, and of its embedding tables, is resident in RAM now (counted by
/// `mincore`) to `*out`: for a mapped model, the page cache's share of the file; a model read
/// into memory is resident unless swapped out. Lets an operator see that a model is warm. Costs
/// one system call per 16 MiB of the model.
///
/// # Safety
/// `model` is NULL or a live handle; `out` is NULL or valid for a write.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_model_residency(
    model: *const ple_model,
    out: *mut ple_residency,
) -> ple_status {
    guard("ple_model_residency", ple_status::Panic, || {
        // SAFETY: NULL or a live handle per the contract.
        let Some(m) = (unsafe { model.as_ref() }).filter(|_| !out.is_null()) else {
            return fail(
                ple_status::NullArgument,
                format_args!("ple_model_residency: model and out must not be NULL"),
            );
        };
        match m.model.residency() {
            Ok(r) => {
                // SAFETY: non-NULL (checked) and writable per the contract.
                unsafe {
                    *out = ple_residency {
                        total_bytes: r.total_bytes,
                        resident_bytes: r.resident_bytes,
                        table_bytes: r.table_bytes,
                        table_resident_bytes: r.table_resident_bytes,
                    }
                };
                ple_status::Ok
            }
            Err(e) => fail(ple_status::of(&e), format_args!("ple_model_residency: {e}")),
        }
    })
}

/// Whether `model`'s pages are locked in RAM (opened with `PLE_OPEN_LOCK`). False for a NULL model
/// (recorded in `ple_last_error`).
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_model_is_locked(model: *const ple_model) -> bool {
    getter!(ple_model_is_locked(model) or false => |m| m.model.is_locked())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::get_thread_error;
    use crate::ffi::Message;

    fn last_error() -> String {
        let mut m = Message::new();
        get_thread_error(&mut m);
        m.as_str().to_owned()
    }

    /// Every getter answers a NULL model, and an index out of range, with its fallback and a
    /// message that names the getter itself (the name comes from the `getter!` invocation).
    #[test]
    fn getters_name_themselves_in_their_errors() {
        // Embedded, so the test also runs where the checkout is absent (the AVX-512 emulator).
        let bytes = include_bytes!("../../examples/models/quickstart.ple");
        let mut model = std::ptr::null();
        // SAFETY: valid buffer and out pointer.
        let st =
            unsafe { ple_model_open_memory(bytes.as_ptr().cast(), bytes.len(), 0, &mut model) };
        assert_eq!(st, ple_status::Ok);
        let null = std::ptr::null::<ple_model>();
        macro_rules! check {
            ($f:ident($($arg:expr),*) == $fallback:expr) => {{
                // SAFETY: a NULL model is allowed.
                let got = unsafe { $f(null $(, $arg)*) };
                assert_eq!(got, $fallback);
                assert_eq!(last_error(), concat!(stringify!($f), ": model is NULL"));
            }};
            ($f:ident[$list:literal]($($arg:expr),*) == $fallback:expr) => {{
                check!($f(0 $(, $arg)*) == $fallback);
                // SAFETY: a live model; the index is out of range.
                let got = unsafe { $f(model, 99 $(, $arg)*) };
                assert_eq!(got, $fallback);
                let msg = last_error();
                assert!(
                    msg.starts_with(concat!(stringify!($f), ": index 99 is out of range"))
                        && msg.ends_with($list),
                    "{msg}"
                );
            }};
        }
        check!(ple_model_name() == std::ptr::null());
        check!(ple_model_dtype() == ple_dtype::None);
        check!(ple_model_simd_level() == std::ptr::null());
        check!(ple_model_task_count() == 0);
        check!(ple_model_input_count() == 0);
        check!(ple_model_output_width() == 0);
        check!(ple_model_output_count() == 0);
        check!(ple_model_gate_width() == 0);
        check!(ple_model_gate_count() == 0);
        check!(ple_model_is_locked() == false);
        check!(ple_model_input_name["5 inputs)"]() == std::ptr::null());
        check!(ple_model_input_kind["5 inputs)"]() == ple_input_kind::None);
        check!(ple_model_input_width["5 inputs)"]() == 0);
        check!(ple_model_input_values_per_sample["5 inputs)"]() == 0);
        check!(ple_model_input_vocab_size["5 inputs)"]() == 0);
        check!(ple_model_input_max_len["5 inputs)"]() == 0);
        check!(ple_model_input_ids_through_f32["5 inputs)"]() == false);
        check!(ple_model_input_pooling["5 inputs)"]() == std::ptr::null());
        check!(ple_model_input_pad_id["5 inputs)"](std::ptr::null_mut()) == false);
        check!(ple_model_output_name["2 outputs)"]() == std::ptr::null());
        check!(ple_model_output_offset["2 outputs)"]() == 0);
        check!(ple_model_output_len["2 outputs)"]() == 0);
        check!(ple_model_gate_name["gates)"]() == std::ptr::null());
        check!(ple_model_gate_offset["gates)"]() == 0);
        check!(ple_model_gate_len["gates)"]() == 0);
        // SAFETY: the live handle, freed once.
        unsafe { ple_model_free(model) };
    }
}
