//! The session handle: per-thread working memory, scoring, and the last detailed message.

use std::cell::UnsafeCell;
use std::ffi::{c_char, CStr};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{
    fail, get_thread_error, guard, ple_model, ple_pool, ple_status, set_thread_error, Lossy,
    Message,
};
use crate::model::InputKind;
use crate::session::{Input, Session};

/// One input column: one feature's values for the whole batch, row-major. Set exactly one of
/// `ids` (sparse and sequence features) and `floats` (dense features); `len` counts its
/// elements: `batch * ple_model_input_values_per_sample(model, i)`.
///
/// A sparse or sequence feature may take its embedding vectors in `floats` instead of ids (each
/// `ple_model_input_width` floats: what its table holds for the id, see
/// `ple_model_input_embedding`): `batch * width` floats for a sparse feature; for a sequence,
/// ragged with `offsets` counting vectors (the vectors of each sample's real ids, padding left
/// out), or padded (`batch * max_len * width`) for an input without a pad id. A feature whose
/// table is not in the file (`ple_model_input_has_table` false) takes only vectors.
///
/// A sequence feature's ids may instead come ragged (TorchRec's jagged form, Arrow's list
/// offsets): `offsets` then points at `offsets_len = batch + 1` offsets, sample `s` holds ids
/// `ids[offsets[s] .. offsets[s + 1]]`, `offsets[0]` is 0, offsets never decrease, and
/// `offsets[batch]` equals `len`. Each sample holds at most `ple_model_input_max_len` ids; it is
/// pooled exactly as the padded form with its short samples padded by the input's pad id (an
/// input without a pad id counts every position, so each of its samples must then hold exactly
/// `max_len` ids). Malformed offsets or a sample over the bound fail with
/// `PLE_STATUS_RAGGED_INPUT`, naming the input and the sample; a wrong `offsets_len` with
/// `PLE_STATUS_WRONG_LENGTH`. `offsets` is NULL (and `offsets_len` 0) for every padded, sparse or
/// dense column, so a zero-initialised column is not ragged.
///
/// Either every column of a call has `name == NULL`, and column `i` is the model's input `i`, or
/// every column has a name, and columns may come in any order (each input exactly once). Looking
/// names up costs a little per call: for the hottest paths, resolve the order once with
/// `ple_model_input_index` and pass unnamed columns.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ple_column {
    /// The input's name (NUL-terminated), or NULL to match columns to inputs by position.
    pub name: *const c_char,
    /// Ids of a sparse (`batch` ids) or sequence (`batch * max_len` ids, padded) feature; NULL
    /// for a dense feature or embedding vectors.
    pub ids: *const i64,
    /// Floats of a dense feature (`batch * width`), or embedding vectors of a sparse or sequence
    /// feature; NULL for ids.
    pub floats: *const f32,
    /// Number of elements at `ids` or `floats`.
    pub len: usize,
    /// `batch + 1` offsets into `ids` (or into the vectors in `floats`) for a ragged sequence
    /// column; NULL otherwise.
    pub offsets: *const i64,
    /// Number of elements at `offsets` (`batch + 1`), or 0.
    pub offsets_len: usize,
}

/// One thread's scoring state for one model: working memory sized for `max_batch` samples, and the
/// message of its last failure. Use a session from one thread at a time (it may move between
/// threads); give each thread its own. A call made while another thread is inside a call on the
/// same session is refused with `PLE_STATUS_SESSION_BUSY`. Opaque.
pub struct ple_session {
    /// Set while a call uses `state`. Claimed with one compare-and-swap per call: a call from a
    /// second thread finds it set and is refused instead of racing the first.
    in_use: AtomicBool,
    model: Arc<ple_model>,
    max_batch: usize,
    /// The most threads a call runs on (1 without a pool).
    threads: usize,
    /// Everything a call changes; touched only by the thread that holds `in_use`.
    state: UnsafeCell<State>,
}

struct State {
    session: Session,
    /// Column views for the current call; empty between calls, with room for every input.
    columns: Vec<Input<'static>>,
    /// Which inputs a by-name call has filled; `len == inputs`.
    seen: Vec<bool>,
    message: Message,
}

/// The right to use a session's state, held for one call; dropping it (also while unwinding
/// from a panic) releases the session.
struct Claim<'a>(&'a ple_session);

impl ple_session {
    /// Claims the session for one call, or `None` if another thread is inside a call on it.
    fn claim(&self) -> Option<Claim<'_>> {
        self.in_use
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Claim(self))
    }
}

impl Claim<'_> {
    fn state(&mut self) -> &mut State {
        // SAFETY: `in_use` was set by this claim and is cleared only when it is dropped, so no
        // other claim, hence no other reference to the state, exists meanwhile; `&mut self`
        // makes this one exclusive.
        unsafe { &mut *self.0.state.get() }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.in_use.store(false, Ordering::Release);
    }
}

/// The message of `PLE_STATUS_SESSION_BUSY`.
fn busy(fn_name: &str) -> ple_status {
    fail(
        ple_status::SessionBusy,
        format_args!(
            "{fn_name}: the session is in use by another thread (a session must be used by one \
             thread at a time: give each thread its own)"
        ),
    )
}

/// Creates a session over `model` for batches of 0 to `max_batch` samples (`max_batch` from 1 to
/// 2^24). This allocates the working memory, for min(max_batch, tile) samples at a time, where a
/// tile is 64 samples, or 128 samples for models with over 8 MiB of dense-layer weights; scoring
/// then allocates nothing. The session holds its own reference to the model, so the caller may
/// free its model handle at any time. On success writes the new session to `*out_session`; free
/// it with `ple_session_free`. Every call runs on the calling thread; see
/// `ple_session_new_with_pool` to use several.
///
/// # Safety
/// `model` is NULL or a live handle; `out_session` is NULL or valid for a write.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_session_new(
    model: *const ple_model,
    max_batch: usize,
    out_session: *mut *mut ple_session,
) -> ple_status {
    guard("ple_session_new", ple_status::Panic, || {
        // SAFETY: forwarded contract; no pool.
        unsafe {
            new_session(
                "ple_session_new",
                model,
                max_batch,
                std::ptr::null(),
                out_session,
            )
        }
    })
}

/// As `ple_session_new`, and large batches are split across `pool`'s threads: each thread, the
/// caller's included, scores whole tiles of samples in working memory of its own, allocated now
/// (one tile per thread, and no more threads than 16-sample tiles of `max_batch`). Results are
/// bit-identical to `ple_session_new`'s. A batch is split when every thread gets at least 16
/// samples and the call has at least 8 MFLOP of dense-layer work (docs/DESIGN.md); smaller ones
/// run on the calling thread alone (see `ple_session_set_min_parallel_batch`). The session holds
/// its own reference to the pool, so the caller may free its pool handle at any time. A pool serves
/// one call at a time: a call that finds the pool busy with another session's call runs on its own
/// thread, without waiting. `pool` may be NULL (then this is `ple_session_new`).
///
/// # Safety
/// `model` and `pool` are NULL or live handles; `out_session` is NULL or valid for a write.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_session_new_with_pool(
    model: *const ple_model,
    max_batch: usize,
    pool: *const ple_pool,
    out_session: *mut *mut ple_session,
) -> ple_status {
    guard("ple_session_new_with_pool", ple_status::Panic, || {
        // SAFETY: forwarded contract.
        unsafe {
            new_session(
                "ple_session_new_with_pool",
                model,
                max_batch,
                pool,
                out_session,
            )
        }
    })
}

/// The body of the two constructors.
///
/// # Safety
/// As `ple_session_new_with_pool`.
unsafe fn new_session(
    fn_name: &str,
    model: *const ple_model,
    max_batch: usize,
    pool: *const ple_pool,
    out_session: *mut *mut ple_session,
) -> ple_status {
    if model.is_null() || out_session.is_null() {
        return fail(
            ple_status::NullArgument,
            format_args!("{fn_name}: model and out_session must not be NULL"),
        );
    }
    // SAFETY: a live handle is an `Arc::into_raw` pointer; take one more strong count for the
    // session, owned by the `Arc` rebuilt from it.
    let model = unsafe {
        Arc::increment_strong_count(model);
        Arc::from_raw(model)
    };
    // SAFETY: NULL or a live handle per the contract. The session keeps a `Pool` clone of its
    // own, so the handle may be freed afterwards.
    let created = match unsafe { pool.as_ref() } {
        None => Session::new(&model.model, max_batch),
        Some(p) => Session::with_pool(&model.model, max_batch, &p.pool),
    };
    let session = match created {
        Ok(s) => s,
        Err(e) => return fail(ple_status::of(&e), format_args!("{fn_name}: {e}")),
    };
    let n = model.model.inputs().len();
    let handle = Box::new(ple_session {
        in_use: AtomicBool::new(false),
        max_batch: session.max_batch(),
        threads: session.threads(),
        state: UnsafeCell::new(State {
            session,
            columns: Vec::with_capacity(n),
            seen: vec![false; n],
            message: Message::new(),
        }),
        model,
    });
    // SAFETY: non-NULL (checked) and writable per the contract.
    unsafe { *out_session = Box::into_raw(handle) };
    ple_status::Ok
}

/// Frees a session (and its reference to the model). NULL is accepted and ignored. A session that
/// another thread is scoring with at that moment is not freed (it leaks, and `ple_last_error`
/// says so): freeing it would crash the other thread.
///
/// # Safety
/// `session` is NULL or a live session, and is not used again.
#[no_mangle]
pub unsafe extern "C" fn ple_session_free(session: *mut ple_session) {
    guard("ple_session_free", (), || {
        // SAFETY: NULL or a live session per the contract.
        let Some(s) = (unsafe { session.as_ref() }) else {
            return;
        };
        let Some(claim) = s.claim() else {
            busy("ple_session_free");
            return;
        };
        // Hold the claim to the end: a call another thread starts meanwhile is refused.
        std::mem::forget(claim);
        // SAFETY: a live session is a `Box::into_raw` pointer, released here exactly once; the
        // shared reference `s` is not used again.
        drop(unsafe { Box::from_raw(session) });
    })
}

/// The session's `max_batch`; 0 if `session` is NULL.
///
/// # Safety
/// `session` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn ple_session_max_batch(session: *const ple_session) -> usize {
    guard("ple_session_max_batch", 0, || {
        // SAFETY: NULL or a live session per the contract.
        match unsafe { session.as_ref() } {
            Some(s) => s.max_batch,
            None => {
                fail(
                    ple_status::NullArgument,
                    format_args!("ple_session_max_batch: session is NULL"),
                );
                0
            }
        }
    })
}

/// The most threads one scoring call of the session runs on: 1 without a pool, else the pool's
/// thread count (or fewer, for a small `max_batch`); 0 if `session` is NULL.
///
/// # Safety
/// `session` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn ple_session_threads(session: *const ple_session) -> usize {
    guard("ple_session_threads", 0, || {
        // SAFETY: NULL or a live session per the contract.
        match unsafe { session.as_ref() } {
            Some(s) => s.threads,
            None => {
                fail(
                    ple_status::NullArgument,
                    format_args!("ple_session_threads: session is NULL"),
                );
                0
            }
        }
    })
}

/// Sets the smallest batch that `session` splits across its pool (batches must still give every
/// thread 16 samples or so); 0 and 1 split every batch that can be. The default depends on the
/// model's size (`ple_session_new_with_pool`). Scores do not depend on it, only speed does. No
/// effect on a session without a pool.
///
/// # Safety
/// `session` is NULL or a live session used by no other thread during the call.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_session_set_min_parallel_batch(
    session: *mut ple_session,
    batch: usize,
) -> ple_status {
    const NAME: &str = "ple_session_set_min_parallel_batch";
    guard(NAME, ple_status::Panic, || {
        // SAFETY: NULL or a live session per the contract; only a shared reference is made, as
        // in `run`.
        let Some(handle) = (unsafe { session.as_ref() }) else {
            return fail(
                ple_status::NullArgument,
                format_args!("{NAME}: session is NULL"),
            );
        };
        let Some(mut claim) = handle.claim() else {
            return busy(NAME);
        };
        claim.state().session.set_min_parallel_batch(batch);
        ple_status::Ok
    })
}

/// The model a session scores (a borrowed pointer, valid while the session lives: do not free it
/// unless you `ple_model_clone` it first); NULL if `session` is NULL.
///
/// # Safety
/// `session` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn ple_session_model(session: *const ple_session) -> *const ple_model {
    guard("ple_session_model", std::ptr::null(), || {
        // SAFETY: NULL or a live session per the contract.
        match unsafe { session.as_ref() } {
            Some(s) => Arc::as_ptr(&s.model),
            None => {
                fail(
                    ple_status::NullArgument,
                    format_args!("ple_session_model: session is NULL"),
                );
                std::ptr::null()
            }
        }
    })
}

/// The detailed message of this session's most recent failed call ("" if none failed yet), e.g.
/// "input 'user_id', sample 3, position 0: id 1000 is out of range (the table has 1000 rows)".
/// Never NULL. Valid until the next scoring call on this session or its free. A call refused with
/// `PLE_STATUS_SESSION_BUSY` leaves the session's message alone (its message is in
/// `ple_last_error`), and while another thread is inside a call on the session this returns a
/// fixed text saying so.
///
/// # Safety
/// `session` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn ple_session_last_error(session: *const ple_session) -> *const c_char {
    guard("ple_session_last_error", c"".as_ptr(), || {
        // SAFETY: NULL or a live session per the contract.
        let Some(s) = (unsafe { session.as_ref() }) else {
            return c"ple_session_last_error: session is NULL".as_ptr();
        };
        match s.claim() {
            Some(mut claim) => claim.state().message.as_ptr(),
            None => c"ple_session_last_error: the session is in use by another thread".as_ptr(),
        }
    })
}

/// Scores `batch` samples of a model whose only input is one dense feature: `x` holds
/// `batch * ple_model_input_width(model, 0)` floats, row-major. Otherwise as `ple_session_run`.
///
/// # Safety
/// `session` is NULL or a live session used by no other thread during the call; each buffer is
/// NULL or valid for its length in elements (`x` for reads, `out` and `gates` for writes), and the
/// written buffers overlap no other buffer.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_session_run_dense(
    session: *mut ple_session,
    batch: usize,
    x: *const f32,
    x_len: usize,
    out: *mut f32,
    out_len: usize,
    gates: *mut f32,
    gates_len: usize,
) -> ple_status {
    let column = ple_column {
        name: std::ptr::null(),
        ids: std::ptr::null(),
        floats: x,
        len: x_len,
        offsets: std::ptr::null(),
        offsets_len: 0,
    };
    // SAFETY: forwarded contract; `column` lives across the call.
    unsafe {
        run(
            "ple_session_run_dense",
            session,
            batch,
            &column,
            1,
            out,
            out_len,
            gates,
            gates_len,
        )
    }
}

/// Scores `batch` samples, 0 to the session's `max_batch` (batch 0 is a no-op that succeeds and
/// writes nothing; every buffer length is then 0). `columns` holds `n_columns` input
/// columns (see `ple_column`: by position or by name). Writes `batch * ple_model_output_width`
/// floats to `out` (`out_len` must equal that), sample after sample, each sample's outputs in
/// `ple_model_output_*` order. If `gates` is not NULL it receives `batch * ple_model_gate_width`
/// gate weights (`gates_len` must equal that); pass NULL and 0 to skip them.
///
/// Everything is validated (every length, kind and id) before anything is computed, and nothing is
/// written unless the call returns `PLE_STATUS_OK`. Allocates nothing, failures included; on
/// failure `ple_session_last_error` (and `ple_last_error`) say what was wrong.
///
/// # Safety
/// `session` is NULL or a live session used by no other thread during the call; `columns` is NULL
/// or valid for `n_columns` elements, each column's name NULL or NUL-terminated, its data
/// pointer NULL or valid for `len` elements and its offsets NULL or valid for `offsets_len`
/// elements; `out` and `gates` are NULL or valid for writing their lengths in floats and overlap
/// no other buffer.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_session_run(
    session: *mut ple_session,
    batch: usize,
    columns: *const ple_column,
    n_columns: usize,
    out: *mut f32,
    out_len: usize,
    gates: *mut f32,
    gates_len: usize,
) -> ple_status {
    // SAFETY: forwarded contract.
    unsafe {
        run(
            "ple_session_run",
            session,
            batch,
            columns,
            n_columns,
            out,
            out_len,
            gates,
            gates_len,
        )
    }
}

/// A failure of a scoring call: the status, with its message already in the session's buffer.
struct Failed(ple_status);

impl State {
    fn fail(&mut self, status: ple_status, args: fmt::Arguments<'_>) -> Failed {
        self.message.set(args);
        Failed(status)
    }
}

/// Bytes `[start, end)` covered by a buffer, for overlap checks.
fn span<T>(ptr: *const T, len: usize) -> (usize, usize) {
    let start = ptr as usize;
    (
        start,
        start.saturating_add(len.saturating_mul(std::mem::size_of::<T>())),
    )
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < a.1 && b.0 < b.1 && a.0 < b.1 && b.0 < a.1
}

/// Checks a caller buffer (`check_ptr`) and makes a slice of it.
///
/// # Safety
/// A non-NULL `ptr` is valid for reading `len` elements for `'a`.
unsafe fn slice_in<'a, T>(
    ptr: *const T,
    len: usize,
) -> Result<&'a [T], (ple_status, &'static str)> {
    check_ptr(ptr, len)?;
    // SAFETY: checked just above; valid for reads per the contract.
    Ok(unsafe { slice_unchecked(ptr, len) })
}

/// A read buffer as a slice; `(NULL, 0)` is empty.
///
/// # Safety
/// `check_ptr(ptr, len)` passed, and a non-NULL `ptr` is valid for reading `len` elements for
/// `'a`.
unsafe fn slice_unchecked<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: non-NULL (a NULL pointer with len > 0 fails `check_ptr`), aligned,
    // `len * size_of::<T>() <= isize::MAX`, and valid for `len` reads per the contract.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// A written buffer as a slice; `(NULL, 0)` is empty.
///
/// # Safety
/// `check_ptr(ptr, len)` passed; a non-NULL `ptr` is valid for writing `len` elements for `'a`,
/// and nothing else accesses them meanwhile.
unsafe fn slice_out<'a, T>(ptr: *mut T, len: usize) -> &'a mut [T] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: non-NULL (a NULL pointer with len > 0 fails `check_ptr`), aligned, in size, valid
    // and unaliased per the contract.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

/// Checks a caller buffer before it becomes a slice: `(NULL, 0)` is fine (empty), `(NULL, n > 0)`
/// is `PLE_STATUS_NULL_ARGUMENT`; misaligned or impossibly long buffers are invalid arguments.
fn check_ptr<T>(ptr: *const T, len: usize) -> Result<(), (ple_status, &'static str)> {
    if ptr.is_null() {
        return if len == 0 {
            Ok(())
        } else {
            Err((ple_status::NullArgument, "is NULL but its length is not 0"))
        };
    }
    if !ptr.is_aligned() {
        return Err((
            ple_status::InvalidArgument,
            "is not aligned for its element type",
        ));
    }
    if len > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err((
            ple_status::InvalidArgument,
            "has an impossibly large length",
        ));
    }
    Ok(())
}

/// The body shared by `ple_session_run` and `ple_session_run_dense`.
///
/// # Safety
/// As `ple_session_run`.
#[allow(clippy::too_many_arguments)]
unsafe fn run(
    fn_name: &'static str,
    session: *mut ple_session,
    batch: usize,
    columns: *const ple_column,
    n_columns: usize,
    out: *mut f32,
    out_len: usize,
    gates: *mut f32,
    gates_len: usize,
) -> ple_status {
    if session.is_null() {
        return guard(fn_name, ple_status::Panic, || {
            fail(
                ple_status::NullArgument,
                format_args!("{fn_name}: session is NULL"),
            )
        });
    }
    // SAFETY: non-NULL and live per the contract. Only a shared reference is made: another thread
    // may be inside a call on this session (a contract violation, detected just below).
    let handle = unsafe { &*session };
    let Some(mut claim) = handle.claim() else {
        return guard(fn_name, ple_status::Panic, || busy(fn_name));
    };
    let model = &*handle.model;
    let s = claim.state();
    let status = guard(fn_name, ple_status::Panic, || {
        // SAFETY: forwarded contract.
        let result = unsafe {
            run_checked(
                s, model, fn_name, batch, columns, n_columns, out, out_len, gates, gates_len,
            )
        };
        match result {
            Ok(()) => ple_status::Ok,
            Err(Failed(status)) => {
                set_thread_error(&s.message);
                status
            }
        }
    });
    if status == ple_status::Panic {
        get_thread_error(&mut s.message);
    }
    status
}

/// # Safety
/// As `ple_session_run`.
#[allow(clippy::too_many_arguments)]
unsafe fn run_checked(
    s: &mut State,
    model: &ple_model,
    fn_name: &'static str,
    batch: usize,
    columns: *const ple_column,
    n_columns: usize,
    out: *mut f32,
    out_len: usize,
    gates: *mut f32,
    gates_len: usize,
) -> Result<(), Failed> {
    // Batch 0 is a valid no-op (every buffer may then be empty); only too large a batch fails.
    if batch > s.session.max_batch() {
        return Err(s.fail(
            ple_status::BatchOutOfRange,
            format_args!(
                "{fn_name}: batch {batch} is out of range: it must be at most the session's max_batch of {}",
                s.session.max_batch()
            ),
        ));
    }
    // SAFETY: per the contract, `columns` is valid for `n_columns` reads when non-NULL.
    let columns = match unsafe { slice_in(columns, n_columns) } {
        Ok(c) => c,
        Err((st, why)) => return Err(s.fail(st, format_args!("{fn_name}: columns {why}"))),
    };
    // Every check on the output buffers happens on the raw pointers, before any slice exists: a
    // `&mut` slice must never alias another slice, even briefly.
    if let Err((st, why)) = check_ptr(out, out_len) {
        return Err(s.fail(st, format_args!("{fn_name}: out {why}")));
    }
    let want_gates = !(gates.is_null() && gates_len == 0);
    if want_gates {
        if let Err((st, why)) = check_ptr(gates, gates_len) {
            return Err(s.fail(st, format_args!("{fn_name}: gates {why}")));
        }
    }
    let out_span = span(out, out_len);
    let gates_span = if want_gates {
        span(gates, gates_len)
    } else {
        (0, 0)
    };
    if overlaps(out_span, gates_span) {
        return Err(s.fail(
            ple_status::InvalidArgument,
            format_args!("{fn_name}: out and gates overlap"),
        ));
    }

    // Build the column views in the model's order, in storage reused from call to call.
    let mut views: Vec<Input<'_>> = std::mem::take(&mut s.columns);
    // SAFETY: forwarded contract (column data valid for the call).
    let filled =
        unsafe { fill_views(s, model, fn_name, columns, &mut views, out_span, gates_span) };
    let result = match filled {
        Ok(()) => {
            // SAFETY: checked (non-NULL or empty, aligned, sized) above; valid for writes and
            // disjoint from every other buffer of the call (checked above and in `fill_views`).
            let out = unsafe { slice_out(out, out_len) };
            // SAFETY: as for `out`.
            let gates = want_gates.then(|| unsafe { slice_out(gates, gates_len) });
            s.session
                .run(&views, batch, out, gates)
                .map_err(|e| s.fail(ple_status::of(&e), format_args!("{e}")))
        }
        Err(f) => Err(f),
    };
    s.columns = recycle(views);
    result
}

/// Turns an emptied vector of views back into `'static` storage without reallocating.
fn recycle(mut v: Vec<Input<'_>>) -> Vec<Input<'static>> {
    v.clear();
    let mut v = std::mem::ManuallyDrop::new(v);
    let (ptr, cap) = (v.as_mut_ptr(), v.capacity());
    // SAFETY: the vector is empty, so no value with the shorter lifetime survives; `Input<'a>` and
    // `Input<'static>` have the same layout; pointer and capacity come from this very vector, whose
    // ownership moves into the result (the original is never dropped).
    unsafe { Vec::from_raw_parts(ptr.cast::<Input<'static>>(), 0, cap) }
}

/// Validates the caller's columns and writes one view per model input, in model order, to `views`
/// (empty on entry, with capacity for every input).
///
/// # Safety
/// Each column's name is NULL or NUL-terminated, its data pointer NULL or valid for `len` reads
/// and its offsets NULL or valid for `offsets_len` reads, for `'a`.
unsafe fn fill_views<'a>(
    s: &mut State,
    model: &ple_model,
    fn_name: &'static str,
    columns: &[ple_column],
    views: &mut Vec<Input<'a>>,
    out_span: (usize, usize),
    gates_span: (usize, usize),
) -> Result<(), Failed> {
    let features = model.model.inputs();
    let n = features.len();
    if columns.len() != n {
        // With named columns, name an input that is missing: that is what the caller must fix.
        let name_of = |c: &ple_column| {
            // SAFETY: a non-NULL name is NUL-terminated per the contract.
            (!c.name.is_null()).then(|| unsafe { CStr::from_ptr(c.name) }.to_bytes())
        };
        let missing = features
            .iter()
            .find(|f| {
                !columns
                    .iter()
                    .any(|c| name_of(c) == Some(f.name.as_bytes()))
            })
            .filter(|_| columns.first().is_some_and(|c| !c.name.is_null()));
        return Err(match missing {
            Some(f) => s.fail(
                ple_status::WrongInputCount,
                format_args!(
                    "{fn_name}: expected {n} input columns (one per model input), got {}; input '{}' is missing",
                    columns.len(),
                    f.name
                ),
            ),
            None => s.fail(
                ple_status::WrongInputCount,
                format_args!(
                    "{fn_name}: expected {n} input columns (one per model input), got {}",
                    columns.len()
                ),
            ),
        });
    }
    let by_name = columns.first().is_some_and(|c| !c.name.is_null());
    if by_name {
        s.seen.fill(false);
        views.resize(n, Input::Ids(&[]));
    }
    for (ci, c) in columns.iter().enumerate() {
        if c.name.is_null() == by_name {
            return Err(s.fail(
                ple_status::InvalidArgument,
                format_args!(
                    "{fn_name}: column {ci} {} a name but column 0 {}: name every column or none",
                    if by_name { "lacks" } else { "has" },
                    if by_name { "has one" } else { "does not" },
                ),
            ));
        }
        let fi = if by_name {
            // SAFETY: non-NULL and NUL-terminated per the contract.
            let name = unsafe { CStr::from_ptr(c.name) }.to_bytes();
            let Some(fi) = model.input_index(name) else {
                return Err(s.fail(
                    ple_status::UnknownInput,
                    format_args!(
                        "{fn_name}: column {ci}: the model has no input named '{}'",
                        Lossy(name)
                    ),
                ));
            };
            if std::mem::replace(&mut s.seen[fi], true) {
                return Err(s.fail(
                    ple_status::InvalidArgument,
                    format_args!(
                        "{fn_name}: input '{}' is given twice (column {ci})",
                        Lossy(name)
                    ),
                ));
            }
            fi
        } else {
            ci
        };
        let f = &features[fi];
        let fname = &*f.name;
        let (both_null, ids_set) = (c.ids.is_null() && c.floats.is_null(), !c.ids.is_null());
        if !c.ids.is_null() && !c.floats.is_null() {
            return Err(s.fail(
                ple_status::InvalidArgument,
                format_args!("{fn_name}: column {ci} (input '{fname}') sets both ids and floats"),
            ));
        }
        if both_null && c.len > 0 {
            return Err(s.fail(
                ple_status::NullArgument,
                format_args!(
                    "{fn_name}: column {ci} (input '{fname}') has len {} but ids and floats are both NULL",
                    c.len
                ),
            ));
        }
        let (checked, col_span) = if ids_set {
            (check_ptr(c.ids, c.len), span(c.ids, c.len))
        } else {
            (check_ptr(c.floats, c.len), span(c.floats, c.len))
        };
        if let Err((st, why)) = checked {
            let what = if ids_set { "ids" } else { "floats" };
            return Err(s.fail(
                st,
                format_args!("{fn_name}: column {ci} (input '{fname}'): {what} {why}"),
            ));
        }
        if overlaps(col_span, out_span) || overlaps(col_span, gates_span) {
            return Err(s.fail(
                ple_status::InvalidArgument,
                format_args!("{fn_name}: column {ci} (input '{fname}') overlaps an output buffer"),
            ));
        }
        let offsets = if c.offsets.is_null() && c.offsets_len == 0 {
            None
        } else {
            let off_span = span(c.offsets, c.offsets_len);
            if let Err((st, why)) = check_ptr(c.offsets, c.offsets_len) {
                return Err(s.fail(
                    st,
                    format_args!("{fn_name}: column {ci} (input '{fname}'): offsets {why}"),
                ));
            }
            if overlaps(off_span, out_span) || overlaps(off_span, gates_span) {
                return Err(s.fail(
                    ple_status::InvalidArgument,
                    format_args!(
                        "{fn_name}: column {ci} (input '{fname}'): offsets overlap an output buffer"
                    ),
                ));
            }
            // SAFETY: checked above; valid for `offsets_len` reads for `'a` per the contract.
            Some(unsafe { slice_unchecked::<'a>(c.offsets, c.offsets_len) })
        };
        let view = if let Some(offsets) = offsets {
            if ids_set || both_null {
                Input::RaggedIds {
                    // SAFETY: checked above; valid for `len` reads for `'a` per the contract.
                    ids: unsafe { slice_unchecked::<'a>(c.ids, c.len) },
                    offsets,
                }
            } else {
                Input::RaggedFloats {
                    // SAFETY: as above.
                    floats: unsafe { slice_unchecked::<'a>(c.floats, c.len) },
                    offsets,
                }
            }
        } else if both_null {
            // `(NULL, 0)`: an empty column of the kind the input takes (then a length error).
            match f.kind {
                InputKind::Dense => Input::Floats(&[]),
                _ => Input::Ids(&[]),
            }
        } else if ids_set {
            // SAFETY: checked above; valid for `len` reads for `'a` per the contract.
            Input::Ids(unsafe { slice_unchecked::<'a>(c.ids, c.len) })
        } else {
            // SAFETY: as above.
            Input::Floats(unsafe { slice_unchecked::<'a>(c.floats, c.len) })
        };
        if by_name {
            views[fi] = view;
        } else {
            views.push(view);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::{ple_model_free, ple_model_open_memory};

    fn text(p: *const c_char) -> String {
        // SAFETY: the API returns NUL-terminated strings.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// A call that finds the session claimed by another thread is refused, writes nothing and
    /// leaves the session's message alone; free refuses too; once released, all works. (The
    /// claim is taken by hand here, as another thread inside a call would hold it;
    /// tests/c/hardening.c does it with real threads.)
    #[test]
    fn a_busy_session_refuses_calls_and_free() {
        // Embedded, so the test also runs where the checkout is absent (the AVX-512 emulator).
        let bytes = include_bytes!("../../tests/fixtures/dense_ple/model.ple");
        let mut m = std::ptr::null();
        let mut s = std::ptr::null_mut();
        // SAFETY: valid buffers and out pointers.
        unsafe {
            assert_eq!(
                ple_model_open_memory(bytes.as_ptr().cast(), bytes.len(), 0, &mut m),
                ple_status::Ok
            );
            assert_eq!(ple_session_new(m, 2, &mut s), ple_status::Ok);
        }
        let x = [0.25f32; 2 * 8];
        let mut out = [-7.0f32; 4];
        // SAFETY: a live session; valid buffers.
        let run = |out: &mut [f32; 4]| unsafe {
            ple_session_run_dense(
                s,
                2,
                x.as_ptr(),
                x.len(),
                out.as_mut_ptr(),
                out.len(),
                std::ptr::null_mut(),
                0,
            )
        };
        // SAFETY: a live session.
        let handle = unsafe { &*s };
        let claim = handle.claim().expect("a new session is free");
        assert!(
            handle.claim().is_none(),
            "a claimed session cannot be claimed again"
        );
        assert_eq!(run(&mut out), ple_status::SessionBusy);
        assert_eq!(out, [-7.0; 4], "a refused call writes nothing");
        assert!(
            text(crate::ffi::ple_last_error())
                .starts_with("ple_session_run_dense: the session is in use by another thread"),
            "{}",
            text(crate::ffi::ple_last_error())
        );
        // SAFETY: a live session.
        let own = text(unsafe { ple_session_last_error(s) });
        assert_eq!(
            own,
            "ple_session_last_error: the session is in use by another thread"
        );
        // SAFETY: a live session; refused while claimed, so it stays live.
        unsafe { ple_session_free(s) };
        assert!(text(crate::ffi::ple_last_error())
            .starts_with("ple_session_free: the session is in use"));
        drop(claim);

        assert_eq!(run(&mut out), ple_status::Ok);
        assert!(out.iter().all(|v| v.is_finite() && *v != -7.0));
        // SAFETY: live handles, freed once.
        unsafe {
            ple_session_free(s);
            ple_model_free(m);
        }
    }
}
