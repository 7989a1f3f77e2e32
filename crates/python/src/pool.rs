//! `_ple.Pool`: threads that split one large batch (`ple::Pool`), owned by `ple_runtime.Pool`.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::from_core;

#[pyclass(frozen, module = "ple_runtime._ple")]
pub struct Pool {
    /// `None` once closed; sessions made from it keep their own clone.
    pool: Mutex<Option<ple::Pool>>,
    #[pyo3(get)]
    threads: usize,
}

impl Pool {
    /// A clone of the pool for a model's sessions, or an error if it was closed.
    pub fn get(&self) -> PyResult<ple::Pool> {
        lock(&self.pool)
            .clone()
            .ok_or_else(|| PyValueError::new_err("the pool is closed"))
    }
}

/// The guarded value, also after a panic elsewhere poisoned the mutex (every value kept behind
/// these mutexes is valid at all times).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[pymethods]
impl Pool {
    /// Pool(threads): 0 means one per CPU.
    #[new]
    fn new(py: Python<'_>, threads: usize) -> PyResult<Pool> {
        let pool = py
            .detach(|| ple::Pool::new(threads))
            .map_err(|e| from_core(&e))?;
        Ok(Pool {
            threads: pool.threads(),
            pool: Mutex::new(Some(pool)),
        })
    }

    /// How long an idle thread spins before it sleeps, in microseconds.
    fn set_spin_us(&self, spin_us: u32) -> PyResult<()> {
        self.get()?.set_spin(Duration::from_micros(spin_us.into()));
        Ok(())
    }

    /// Releases this handle (sessions keep the threads until they are dropped).
    fn close(&self) {
        lock(&self.pool).take();
    }

    #[getter]
    fn closed(&self) -> bool {
        lock(&self.pool).is_none()
    }
}
