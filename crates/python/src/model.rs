//! `_ple.Model`: one opened `.ple` model, the sessions that score it, its description, warm-up and
//! residency. Owned by `ple_runtime.Model`, which keeps the public API.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Mutex;

use numpy::{PyArray2, PyUntypedArray};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::error::from_core;
use crate::pool::{lock, Pool};
use crate::predict;

/// What `close` releases: the model handle, its pool and the idle sessions.
struct Open {
    model: ple::Model,
    pool: Option<ple::Pool>,
    min_parallel_batch: Option<usize>,
    /// Sessions not in use. A call takes one (or makes one when none is idle) and puts it back,
    /// so there are as many as calls ever ran at once, whichever threads made them.
    idle: Vec<ple::Session>,
}

#[pyclass(frozen, module = "ple_runtime._ple")]
pub struct Model {
    state: Mutex<Option<Open>>,
    pub(crate) max_batch: usize,
    /// Input names (interned), kinds and values per sample, in model order.
    pub(crate) names: Vec<Py<PyString>>,
    pub(crate) ids: Vec<bool>,
    pub(crate) per_sample: Vec<usize>,
    pub(crate) by_name: HashMap<String, usize>,
    pub(crate) output_width: usize,
    pub(crate) gate_width: usize,
}

fn closed() -> PyErr {
    PyValueError::new_err("the model is closed")
}

impl Model {
    /// An idle session, or a new one (allocated outside the lock).
    pub(crate) fn take_session(&self) -> PyResult<ple::Session> {
        let (model, pool, min_parallel) = {
            let mut state = lock(&self.state);
            let open = state.as_mut().ok_or_else(closed)?;
            if let Some(session) = open.idle.pop() {
                return Ok(session);
            }
            (
                open.model.clone(),
                open.pool.clone(),
                open.min_parallel_batch,
            )
        };
        let mut session = match &pool {
            Some(pool) => ple::Session::with_pool(&model, self.max_batch, pool),
            None => ple::Session::new(&model, self.max_batch),
        }
        .map_err(|e| from_core(&e))?;
        if let Some(batch) = min_parallel {
            session.set_min_parallel_batch(batch);
        }
        Ok(session)
    }

    /// Returns a session for the next call (dropped if the model was closed meanwhile).
    pub(crate) fn give_back(&self, session: ple::Session) {
        if let Some(open) = lock(&self.state).as_mut() {
            open.idle.push(session);
        }
    }

    fn model(&self) -> PyResult<ple::Model> {
        lock(&self.state)
            .as_ref()
            .map(|open| open.model.clone())
            .ok_or_else(closed)
    }
}

#[pymethods]
impl Model {
    /// Model(path, data, verify_data, in_memory, warm, lock, max_batch, pool, min_parallel_batch):
    /// opens `path`, or the bytes `data` when given (copied). Arguments are checked by the caller.
    #[new]
    #[pyo3(signature = (path, data, verify_data, in_memory, warm, lock, max_batch, pool, min_parallel_batch))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        data: Option<&[u8]>,
        verify_data: bool,
        in_memory: bool,
        warm: bool,
        lock: bool,
        max_batch: usize,
        pool: Option<&Pool>,
        min_parallel_batch: Option<usize>,
    ) -> PyResult<Model> {
        let pool = pool.map(Pool::get).transpose()?;
        let opts = ple::LoadOptions {
            verify_data,
            read_into_memory: in_memory,
            warm,
            lock,
            ..ple::LoadOptions::default()
        };
        let model = py
            .detach(|| match (data, &path) {
                (Some(bytes), _) => ple::Model::from_bytes_with(bytes, &opts),
                (None, Some(path)) => ple::Model::open_with(path, &opts),
                (None, None) => ple::Model::from_bytes_with(&[], &opts),
            })
            .map_err(|e| from_core(&e))?;
        let inputs = model.inputs();
        Ok(Model {
            max_batch,
            names: inputs
                .iter()
                .map(|f| PyString::intern(py, &f.name).unbind())
                .collect(),
            ids: inputs
                .iter()
                .map(|f| f.kind != ple::InputKind::Dense)
                .collect(),
            per_sample: inputs.iter().map(|f| f.values_per_sample()).collect(),
            by_name: inputs
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.to_string(), i))
                .collect(),
            output_width: model.output_width(),
            gate_width: model.gate_width(),
            state: Mutex::new(Some(Open {
                model,
                pool,
                min_parallel_batch,
                idle: Vec::new(),
            })),
        })
    }

    /// Everything `ple_runtime.Model` shows: name, dtype, SIMD level, tasks, inputs
    /// `(name, kind, width, values_per_sample, vocab_size, max_len, pooling, pad_id)`, outputs and
    /// gates `(name, offset, len)`, and both widths.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.model()?;
        let d = PyDict::new(py);
        d.set_item("name", m.name())?;
        d.set_item("dtype", m.weight_dtype().map_or("mixed", |t| t.name()))?;
        d.set_item("simd_level", m.simd_level().name())?;
        d.set_item("task_count", m.n_tasks())?;
        let inputs: Vec<_> = m
            .inputs()
            .iter()
            .map(|f| {
                (
                    f.name.to_string(),
                    f.kind.name(),
                    f.width,
                    f.values_per_sample(),
                    f.vocab(),
                    f.max_len,
                    f.pooling.map(|p| p.name()),
                    f.pad_id,
                )
            })
            .collect();
        d.set_item("inputs", inputs)?;
        let mut offset = 0;
        let outputs: Vec<_> = m
            .outputs()
            .map(|(name, len)| {
                offset += len;
                (name.to_string(), offset - len, len)
            })
            .collect();
        d.set_item("outputs", outputs)?;
        let mut offset = 0;
        let gates: Vec<_> = m
            .gates()
            .iter()
            .map(|g| {
                offset += g.width;
                (g.name.clone(), offset - g.width, g.width)
            })
            .collect();
        d.set_item("gates", gates)?;
        d.set_item("output_width", m.output_width())?;
        d.set_item("gate_width", m.gate_width())?;
        Ok(d)
    }

    /// The most threads one call runs on (1 without a pool).
    fn threads(&self) -> PyResult<usize> {
        let session = self.take_session()?;
        let threads = session.threads();
        self.give_back(session);
        Ok(threads)
    }

    /// Scores `inputs` if it is a dict holding exactly the model's inputs as arrays that need no
    /// conversion (the fast path); returns None, having done nothing, for anything else.
    fn predict<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
        gates: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        predict::fast(self, py, inputs, gates.is_truthy()?)
    }

    /// Seconds per call of `calls` library calls on ready `inputs`, timed in Rust (benchmarks).
    fn _time_native(
        &self,
        py: Python<'_>,
        inputs: &Bound<'_, PyAny>,
        calls: usize,
    ) -> PyResult<f64> {
        predict::time_native(self, py, inputs, calls)
    }

    /// Scores `batch` samples from `columns`, `[(name, array)]` in any order, each array C-contiguous
    /// int64 (ids) or float32 (dense), into `out` (and `gates`), C-contiguous float32 arrays.
    #[pyo3(signature = (columns, batch, out, gates=None))]
    fn run(
        &self,
        py: Python<'_>,
        columns: Vec<(String, Bound<'_, PyUntypedArray>)>,
        batch: usize,
        out: Bound<'_, PyArray2<f32>>,
        gates: Option<Bound<'_, PyArray2<f32>>>,
    ) -> PyResult<()> {
        predict::named(self, py, &columns, batch, &out, gates.as_ref())
    }

    /// Brings every page into memory, the GIL released; `progress(done, total)` is called every
    /// 8 MiB and stops the pass by returning a true value.
    #[pyo3(signature = (progress=None))]
    fn warm(&self, py: Python<'_>, progress: Option<Py<PyAny>>) -> PyResult<()> {
        let model = self.model()?;
        let mut thrown = None;
        let result = py.detach(|| {
            model.warm(|done, total| {
                let Some(progress) = &progress else {
                    return ControlFlow::Continue(());
                };
                Python::attach(|py| match progress.call1(py, (done, total)) {
                    Ok(stop) if stop.is_truthy(py).unwrap_or(true) => ControlFlow::Break(()),
                    Ok(_) => ControlFlow::Continue(()),
                    Err(e) => {
                        thrown = Some(e);
                        ControlFlow::Break(())
                    }
                })
            })
        });
        if let Some(e) = thrown {
            return Err(e);
        }
        result.map_err(|e| from_core(&e))
    }

    /// `(total_bytes, resident_bytes, table_bytes, table_resident_bytes)`.
    fn residency(&self, py: Python<'_>) -> PyResult<(u64, u64, u64, u64)> {
        let model = self.model()?;
        let r = py.detach(|| model.residency()).map_err(|e| from_core(&e))?;
        Ok((
            r.total_bytes,
            r.resident_bytes,
            r.table_bytes,
            r.table_resident_bytes,
        ))
    }

    #[getter]
    fn locked(&self) -> bool {
        lock(&self.state)
            .as_ref()
            .is_some_and(|open| open.model.is_locked())
    }

    #[getter]
    fn closed(&self) -> bool {
        lock(&self.state).is_none()
    }

    /// Releases the model, its pool and idle sessions (a call in flight keeps its own).
    fn close(&self) {
        let open = lock(&self.state).take();
        drop(open);
    }
}
