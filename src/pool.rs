//! Running one call's tiles on several cores: [`Pool`], made once and shared by sessions, is either
//! ple's own threads ([`Pool::new`]) or the caller's executor ([`Pool::from_executor`]). A session
//! made with a pool (`Session::with_pool`) splits a large batch into tiles and runs them on it;
//! docs/DESIGN.md ("Threads") says why it is built this way.
//!
//! ple's own pool, in brief:
//!
//! - `threads - 1` workers are started by [`Pool::new`]; the thread that makes a call is the
//!   first worker, so a pool of N threads scores on N cores.
//! - A call hands the pool a job of `n` tasks; every participating thread, the caller included,
//!   takes task indices from one atomic counter until none are left. The caller returns once every
//!   worker it woke has finished, so the job (which lives on the caller's stack) outlives its use.
//! - An idle worker spins for at most [`Pool::spin`] (default [`DEFAULT_SPIN`]), then sleeps in
//!   `std::thread::park` (a futex on Linux) until a call wakes it: an idle pool uses no CPU.
//! - One call at a time: a call that finds the pool busy with another call runs its tasks on its
//!   own thread instead of waiting.
//! - Nothing is allocated per call, and a task that panics does not take a worker down: the
//!   panic is caught, the job completes, and the panic resumes on the caller's thread.

use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The most threads a pool may have.
pub const MAX_THREADS: usize = 1024;

/// How long an idle worker (and a caller waiting for its workers) spins before it sleeps, unless
/// [`Pool::set_spin`] says otherwise. Measured on the benchmark models (docs/DESIGN.md,
/// "Threads"): waking a sleeping worker costs tens of microseconds, so a short spin lets calls
/// that follow each other closely find their workers awake, at a cost of at most this much CPU
/// per worker per call.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// Something that runs tasks in parallel: the interface for plugging a server's own thread pool
/// (TBB, folly, rayon, ...) into ple with [`Pool::from_executor`].
pub trait Executor: Send + Sync {
    /// The most tasks this executor runs at once. A session allocates working memory for this
    /// many tasks (one tile each) when it is created, and never asks for more tasks per call.
    fn threads(&self) -> usize;

    /// Runs `task(0)`, ..., `task(n - 1)`, each exactly once, on any threads, in any order,
    /// concurrently or not, and returns when every one of them has returned. The tasks ple
    /// gives never panic and never wait for one another (each takes tiles from a shared counter
    /// until none are left), so running some or all of them on the calling thread, one after
    /// another, is correct.
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync));
}

/// Threads a session splits large batches across: made once, shared (cheaply cloned) by any
/// number of sessions, stopped when the last clone and the last session using it are dropped.
#[derive(Clone)]
pub struct Pool {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Own(Arc<Workers>),
    Executor(Arc<dyn Executor>),
}

impl Pool {
    /// A pool of `threads` threads: the calling thread of each call plus `threads - 1` workers
    /// started now. `threads == 0` means one per CPU (`std::thread::available_parallelism`).
    /// One thread is a valid pool that runs everything on the caller.
    pub fn new(threads: usize) -> Result<Pool> {
        let threads = match threads {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        if threads > MAX_THREADS {
            return Err(Error::InvalidThreadCount {
                threads,
                limit: MAX_THREADS,
            });
        }
        Ok(Pool {
            kind: Kind::Own(Arc::new(Workers::start(threads)?)),
        })
    }

    /// A pool that runs tasks on the caller's executor instead of threads of its own.
    pub fn from_executor(executor: impl Executor + 'static) -> Result<Pool> {
        Self::from_shared_executor(Arc::new(executor))
    }

    /// As [`Pool::from_executor`], for an executor that is already shared.
    pub fn from_shared_executor(executor: Arc<dyn Executor>) -> Result<Pool> {
        let threads = executor.threads();
        if threads == 0 || threads > MAX_THREADS {
            return Err(Error::InvalidThreadCount {
                threads,
                limit: MAX_THREADS,
            });
        }
        Ok(Pool {
            kind: Kind::Executor(executor),
        })
    }

    /// The most threads a call runs on (the caller included, for ple's own pool).
    pub fn threads(&self) -> usize {
        match &self.kind {
            Kind::Own(w) => w.shared.threads,
            Kind::Executor(e) => e.threads(),
        }
    }

    /// Whether this pool runs on the caller's executor.
    pub fn is_executor(&self) -> bool {
        matches!(self.kind, Kind::Executor(_))
    }

    /// How long idle workers spin before sleeping (zero for a pool over an executor).
    pub fn spin(&self) -> Duration {
        match &self.kind {
            Kind::Own(w) => w.shared.spin(),
            Kind::Executor(_) => Duration::ZERO,
        }
    }

    /// Sets how long an idle worker, and a caller waiting for its workers, spin before they
    /// sleep; zero makes them sleep at once. Takes effect from each thread's next wait. Ignored
    /// by a pool over an executor.
    pub fn set_spin(&self, spin: Duration) {
        if let Kind::Own(w) = &self.kind {
            let ns = u64::try_from(spin.as_nanos()).unwrap_or(u64::MAX);
            w.shared.spin_ns.store(ns, Ordering::Relaxed);
        }
    }

    /// Runs `task(0)`, ..., `task(n - 1)` on the pool and returns when all have returned (the
    /// [`Executor::run`] contract). On ple's own pool the calling thread runs tasks too; if
    /// another call is using the pool at this moment, all `n` run on the calling thread. A
    /// panicking task does not stop the others; the first panic resumes on the calling thread
    /// once all have returned.
    pub fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        match &self.kind {
            Kind::Own(w) => w.shared.run(&w.threads, n, task),
            Kind::Executor(e) => e.run(n, task),
        }
    }

    /// Whether two handles are the same pool.
    pub fn ptr_eq(&self, other: &Pool) -> bool {
        match (&self.kind, &other.kind) {
            (Kind::Own(a), Kind::Own(b)) => Arc::ptr_eq(a, b),
            (Kind::Executor(a), Kind::Executor(b)) => {
                std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
            }
            _ => false,
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
            .field("executor", &self.is_executor())
            .field("spin", &self.spin())
            .finish()
    }
}

/// The worker threads of one pool. Dropping it (with the last `Pool` clone) stops and joins them.
struct Workers {
    shared: Arc<Shared>,
    /// Worker `w` (1-based: the caller is 0) is `threads[w - 1]`.
    threads: Box<[Thread]>,
    handles: Vec<JoinHandle<()>>,
}

/// A value alone on its cache lines, so that one worker's flag does not slow another's.
#[repr(align(128))]
struct Padded<T>(T);

/// The job of the current call: valid from the moment a worker's `go` flag is set until it
/// decrements `pending`.
struct Job {
    task: *const (dyn Fn(usize) + Sync),
    n: usize,
}

/// What the workers and the calling thread share.
struct Shared {
    threads: usize,
    spin_ns: AtomicU64,
    /// Held by the call using the workers.
    busy: AtomicBool,
    /// `go[w]`: worker `w` has a job (index 0, the caller, is unused).
    go: Box<[Padded<AtomicBool>]>,
    shutdown: AtomicBool,
    job: UnsafeCell<Job>,
    /// The next task index to run.
    next: Padded<AtomicUsize>,
    /// Workers of the current call that have not finished; the last one wakes the caller.
    pending: Padded<AtomicUsize>,
    done: Mutex<()>,
    done_cv: Condvar,
    /// The first panic of the current call's tasks.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `job` is the only field that is not `Sync`. It is written only by the caller holding
// `busy` while no worker has a job (`pending` is 0, so no worker reads it), and read by a worker
// only between its `go` flag being set (with Release, after the write) and its decrement of
// `pending` (after which the caller may write it again). The task it points to is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw task pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

impl Workers {
    fn start(threads: usize) -> Result<Workers> {
        let shared = Arc::new(Shared {
            threads,
            spin_ns: AtomicU64::new(DEFAULT_SPIN.as_nanos() as u64),
            busy: AtomicBool::new(false),
            go: (0..threads)
                .map(|_| Padded(AtomicBool::new(false)))
                .collect(),
            shutdown: AtomicBool::new(false),
            job: UnsafeCell::new(Job {
                task: &|_| {},
                n: 0,
            }),
            next: Padded(AtomicUsize::new(0)),
            pending: Padded(AtomicUsize::new(0)),
            done: Mutex::new(()),
            done_cv: Condvar::new(),
            panic: Mutex::new(None),
        });
        let mut workers = Workers {
            shared: shared.clone(),
            threads: Box::new([]),
            handles: Vec::with_capacity(threads - 1),
        };
        // Workers signal once they run: the start of a thread allocates (thread-local storage),
        // and it must be over when `Pool::new` returns, not happen during the first call.
        let started = Arc::new((Mutex::new(0usize), Condvar::new()));
        for w in 1..threads {
            let (shared, started) = (shared.clone(), started.clone());
            let spawned = thread::Builder::new()
                .name(format!("ple-pool-{w}"))
                .spawn(move || {
                    *started.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                    started.1.notify_one();
                    drop(started);
                    shared.work(w)
                });
            match spawned {
                Ok(h) => workers.handles.push(h),
                // Dropping `workers` stops the threads started so far.
                Err(source) => return Err(Error::ThreadStart { source }),
            }
        }
        let mut running = started.0.lock().unwrap_or_else(PoisonError::into_inner);
        while *running < threads - 1 {
            running = started
                .1
                .wait(running)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(running);
        workers.threads = workers.handles.iter().map(|h| h.thread().clone()).collect();
        Ok(workers)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        for h in &self.handles {
            h.thread().unpark();
        }
        let me = thread::current().id();
        for h in self.handles.drain(..) {
            // A worker cannot join itself (possible only if a task dropped the last handle).
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

/// Spins (checking the clock every 64 pauses) until `ready()` or `spin` has passed; whether it
/// became ready.
fn spin_until(spin: Duration, ready: impl Fn() -> bool) -> bool {
    if ready() {
        return true;
    }
    if spin.is_zero() {
        return false;
    }
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            std::hint::spin_loop();
            if ready() {
                return true;
            }
        }
        if start.elapsed() >= spin {
            return false;
        }
    }
}

/// Runs every task on the calling thread; as on the workers, a panic does not stop the others,
/// and the first one resumes once all have run.
fn run_here(n: usize, task: &(dyn Fn(usize) + Sync)) {
    let mut first = None;
    for i in 0..n {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| task(i))) {
            first.get_or_insert(payload);
        }
    }
    if let Some(payload) = first {
        panic::resume_unwind(payload);
    }
}

/// Clears `busy` when the call ends, panicking or not.
struct Busy<'a>(&'a AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Shared {
    fn spin(&self) -> Duration {
        Duration::from_nanos(self.spin_ns.load(Ordering::Relaxed))
    }

    /// The loop of worker `w`: wait for a job (spin, then park), run tasks, report, repeat.
    fn work(&self, w: usize) {
        let go = &self.go[w].0;
        loop {
            let has_job = || go.load(Ordering::Acquire);
            let stop = || self.shutdown.load(Ordering::Acquire);
            if !spin_until(self.spin(), || has_job() || stop()) {
                // `unpark` before `park` makes `park` return at once, so no wake-up is lost;
                // `park` may also return spuriously, hence the loop.
                while !has_job() && !stop() {
                    thread::park();
                }
            }
            if !has_job() {
                return; // shut down
            }
            self.take_tasks();
            // Cleared before `pending` is released, so the next call's `go` cannot be lost.
            go.store(false, Ordering::Relaxed);
            if self.pending.0.fetch_sub(1, Ordering::AcqRel) == 1 {
                // Under the lock: the caller checks `pending` under it before waiting.
                let _g = self.done.lock().unwrap_or_else(PoisonError::into_inner);
                self.done_cv.notify_one();
            }
        }
    }

    /// Runs tasks of the current job until none are left, catching panics.
    fn take_tasks(&self) {
        // SAFETY: called by the caller of `run` or by a worker whose `go` flag is set, while the
        // job is valid (see `unsafe impl Sync for Shared`); the task outlives the job.
        let (task, n) = unsafe {
            let job = &*self.job.get();
            (&*job.task, job.n)
        };
        loop {
            let i = self.next.0.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return;
            }
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| task(i))) {
                let mut first = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
                first.get_or_insert(payload);
            }
        }
    }

    fn run(&self, workers: &[Thread], n: usize, task: &(dyn Fn(usize) + Sync)) {
        let helpers = n.min(self.threads).saturating_sub(1);
        if helpers == 0 || self.busy.swap(true, Ordering::Acquire) {
            // Nothing to share, or another call has the workers: run everything here.
            run_here(n, task);
            return;
        }
        let _busy = Busy(&self.busy);
        // SAFETY: only the lifetime is erased. The pointer is used by workers only until they
        // decrement `pending`, and this function returns only after `pending` reached 0.
        let task_static: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(task) };
        // SAFETY: we hold `busy` and no worker has a job (the previous call waited for
        // `pending` to reach 0), so nothing reads the job while it is written.
        unsafe {
            *self.job.get() = Job {
                task: task_static,
                n,
            }
        };
        self.next.0.store(0, Ordering::Relaxed);
        self.pending.0.store(helpers, Ordering::Relaxed);
        for go in &self.go[1..=helpers] {
            go.0.store(true, Ordering::Release);
        }
        for t in &workers[..helpers] {
            t.unpark();
        }
        self.take_tasks();
        self.wait_for_helpers();
        let first_panic = self
            .panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(payload) = first_panic {
            panic::resume_unwind(payload);
        }
    }

    fn wait_for_helpers(&self) {
        let finished = || self.pending.0.load(Ordering::Acquire) == 0;
        if spin_until(self.spin(), finished) {
            return;
        }
        let mut g = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        while !finished() {
            g = self.done_cv.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The one-line text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
