//! The pool handle: threads, or the caller's executor, that sessions split large batches across.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use super::{fail, guard, ple_status};
use crate::pool::{Executor, Pool, MAX_THREADS};

/// Threads that sessions split large batches across (`ple_session_new_with_pool`): either the
/// library's own (`ple_pool_new`) or the caller's executor (`ple_pool_new_executor`). Reference
/// counted like a model and thread-safe: any number of sessions on any threads may share one, and
/// every function taking a pool may be called from any thread at any time. Opaque.
pub struct ple_pool {
    pub(crate) pool: Pool,
}

/// One task of a job handed to an executor: call it as `task(task_ctx, index)`.
pub type ple_task_fn = unsafe extern "C" fn(task_ctx: *mut c_void, index: usize);

/// An executor's entry point (see `ple_pool_new_executor`): runs `task(task_ctx, i)` for every
/// `i` in `0..n`, each exactly once, on any threads, in any order, concurrently or not, and
/// returns only after every one of them has returned.
pub type ple_executor_run_fn = Option<
    unsafe extern "C" fn(
        executor_ctx: *mut c_void,
        task: ple_task_fn,
        task_ctx: *mut c_void,
        n: usize,
    ),
>;

/// Called once with the executor's context when the last reference to its pool is released.
pub type ple_executor_release_fn = Option<unsafe extern "C" fn(executor_ctx: *mut c_void)>;

/// Writes a new handle for `pool` to `*out_pool`.
///
/// # Safety
/// `out_pool` is non-NULL and valid for a write.
unsafe fn hand_out(pool: Pool, out_pool: *mut *const ple_pool) -> ple_status {
    // SAFETY: non-NULL and writable per the contract.
    unsafe { *out_pool = Arc::into_raw(Arc::new(ple_pool { pool })) };
    ple_status::Ok
}

/// Starts a pool of `threads` threads for sessions to split large batches across: `threads - 1`
/// worker threads, plus the thread that makes each scoring call, which works too. `threads` 0
/// means one per CPU; 1 is a valid pool that runs everything on the calling thread; at most 1024.
/// Idle workers sleep (after spinning for at most 50 µs; see `ple_pool_set_spin_us`): an idle pool
/// uses no CPU. Writes a new handle (reference count 1) to `*out_pool`; release it with
/// `ple_pool_free` (the threads stop once no handle and no session uses the pool).
///
/// # Safety
/// `out_pool` is NULL or valid for a write.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_pool_new(
    threads: usize,
    out_pool: *mut *const ple_pool,
) -> ple_status {
    guard("ple_pool_new", ple_status::Panic, || {
        if out_pool.is_null() {
            return fail(
                ple_status::NullArgument,
                format_args!("ple_pool_new: out_pool must not be NULL"),
            );
        }
        match Pool::new(threads) {
            // SAFETY: non-NULL (checked) and writable per the contract.
            Ok(pool) => unsafe { hand_out(pool, out_pool) },
            Err(e) => fail(ple_status::of(&e), format_args!("ple_pool_new: {e}")),
        }
    })
}

/// The caller's executor, called through its C entry points.
struct CallerExecutor {
    threads: usize,
    run: unsafe extern "C" fn(*mut c_void, ple_task_fn, *mut c_void, usize),
    ctx: *mut c_void,
    release: ple_executor_release_fn,
}

// SAFETY: `ple_pool_new_executor`'s contract: the executor may be called, and released, from any
// thread, and from several at once.
unsafe impl Send for CallerExecutor {}
// SAFETY: as above.
unsafe impl Sync for CallerExecutor {}

/// Calls one task: `task_ctx` points to the `&dyn Fn` that `CallerExecutor::run` passed.
///
/// # Safety
/// `task_ctx` is the pointer `CallerExecutor::run` gave the executor, during that call.
unsafe extern "C" fn run_task(task_ctx: *mut c_void, index: usize) {
    // SAFETY: per the contract, it points to a live `&(dyn Fn(usize) + Sync)`.
    let task = unsafe { &*task_ctx.cast::<&(dyn Fn(usize) + Sync)>() };
    // The tasks a session hands out catch their own panics; this only makes sure that no
    // unwinding ever reaches the executor's C frames.
    let _ = catch_unwind(AssertUnwindSafe(|| task(index)));
}

impl Executor for CallerExecutor {
    fn threads(&self) -> usize {
        self.threads
    }

    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        let task_ctx: *const &(dyn Fn(usize) + Sync) = &task;
        // SAFETY: the executor's contract (`ple_pool_new_executor`): it calls `run_task` with
        // `task_ctx` for indices below `n` and returns after the last such call has returned,
        // while `task` (borrowed for this call) is alive.
        unsafe { (self.run)(self.ctx, run_task, task_ctx.cast_mut().cast(), n) };
    }
}

impl Drop for CallerExecutor {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: the caller's release function, called once, with its own context.
            unsafe { release(self.ctx) };
        }
    }
}

/// Makes a pool that runs sessions' tasks on the caller's executor (a server's own thread pool)
/// instead of threads of its own. `threads` (1 to 1024) is the most tasks the executor runs at
/// once: each session on the pool allocates working memory for that many tasks (one tile each),
/// and a scoring call asks for at most that many tasks.
///
/// `run(executor_ctx, task, task_ctx, n)` must call `task(task_ctx, i)` for every `i` in `0..n`,
/// each exactly once, on any threads, in any order, concurrently or not, and return only after
/// every call has returned. Tasks never fail and never wait for one another (each scores tiles
/// from a shared counter until none are left), so running some, or all, of them on the calling
/// thread is correct; running them concurrently is what makes the call faster. `run` may be
/// called from several threads at once (one per session scoring on the pool). A call whose
/// executor returns before running every task fails with `PLE_STATUS_EXECUTOR_FAILED`.
///
/// `release` (may be NULL) is called once with `executor_ctx` when the pool is gone: after its
/// last handle is freed and the last session using it is freed, on the thread that freed it.
/// Writes a new handle to `*out_pool`; release it with `ple_pool_free`. On failure `release` is
/// not called.
///
/// # Safety
/// `run` and `release` are NULL or functions with these signatures that may be called from any
/// thread; `executor_ctx` stays valid until `release` is called (or, without `release`, until the
/// pool is gone); `out_pool` is NULL or valid for a write.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_pool_new_executor(
    threads: usize,
    run: ple_executor_run_fn,
    executor_ctx: *mut c_void,
    release: ple_executor_release_fn,
    out_pool: *mut *const ple_pool,
) -> ple_status {
    guard("ple_pool_new_executor", ple_status::Panic, || {
        let Some(run) = run.filter(|_| !out_pool.is_null()) else {
            return fail(
                ple_status::NullArgument,
                format_args!("ple_pool_new_executor: run and out_pool must not be NULL"),
            );
        };
        if threads == 0 || threads > MAX_THREADS {
            return fail(
                ple_status::InvalidArgument,
                format_args!(
                    "ple_pool_new_executor: threads is {threads}: it must be between 1 and \
                     {MAX_THREADS} (the most tasks the executor runs at once)"
                ),
            );
        }
        let executor = CallerExecutor {
            threads,
            run,
            ctx: executor_ctx,
            release,
        };
        match Pool::from_executor(executor) {
            // SAFETY: non-NULL (checked) and writable per the contract.
            Ok(pool) => unsafe { hand_out(pool, out_pool) },
            Err(e) => fail(
                ple_status::of(&e),
                format_args!("ple_pool_new_executor: {e}"),
            ),
        }
    })
}

/// Returns a new reference to `pool` (the same pointer), to be released with its own
/// `ple_pool_free`. Returns NULL if `pool` is NULL.
///
/// # Safety
/// `pool` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_pool_clone(pool: *const ple_pool) -> *const ple_pool {
    guard("ple_pool_clone", std::ptr::null(), || {
        if pool.is_null() {
            fail(
                ple_status::NullArgument,
                format_args!("ple_pool_clone: pool is NULL"),
            );
            return std::ptr::null();
        }
        // SAFETY: a live handle owns one strong count; add one for the new reference.
        unsafe { Arc::increment_strong_count(pool) };
        pool
    })
}

/// Releases one reference to a pool. Sessions hold their own references, so a pool may be freed
/// while sessions still use it: its threads stop (and an executor's `release` is called) when the
/// last session using it is freed. NULL is accepted and ignored.
///
/// # Safety
/// `pool` is NULL or a live handle, and this reference is not used again.
#[no_mangle]
pub unsafe extern "C" fn ple_pool_free(pool: *const ple_pool) {
    guard("ple_pool_free", (), || {
        if !pool.is_null() {
            // SAFETY: a live handle owns one strong count, released here exactly once.
            drop(unsafe { Arc::from_raw(pool) });
        }
    })
}

/// The most threads a scoring call on this pool runs on (the calling thread included, for the
/// library's own pool); 0 if `pool` is NULL.
///
/// # Safety
/// `pool` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ple_pool_threads(pool: *const ple_pool) -> usize {
    guard("ple_pool_threads", 0, || {
        // SAFETY: NULL or a live handle per the contract.
        match unsafe { pool.as_ref() } {
            Some(p) => p.pool.threads(),
            None => {
                fail(
                    ple_status::NullArgument,
                    format_args!("ple_pool_threads: pool is NULL"),
                );
                0
            }
        }
    })
}

/// Sets how long, in microseconds, an idle worker of the pool (and a caller waiting for its
/// workers) spins before it sleeps; 0 makes them sleep at once. The default, 50 µs, lets calls that
/// follow each other closely find the workers awake, at a cost of at most that much CPU per worker
/// per call. Takes effect from each thread's next wait; safe to call while sessions score. No
/// effect on a pool made by `ple_pool_new_executor`.
///
/// # Safety
/// `pool` is NULL or a live handle.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn ple_pool_set_spin_us(pool: *const ple_pool, spin_us: u32) -> ple_status {
    guard("ple_pool_set_spin_us", ple_status::Panic, || {
        // SAFETY: NULL or a live handle per the contract.
        match unsafe { pool.as_ref() } {
            Some(p) => {
                p.pool.set_spin(Duration::from_micros(spin_us.into()));
                ple_status::Ok
            }
            None => fail(
                ple_status::NullArgument,
                format_args!("ple_pool_set_spin_us: pool is NULL"),
            ),
        }
    })
}
