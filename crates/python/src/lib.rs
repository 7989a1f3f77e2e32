//! `ple_runtime._ple`: the native half of the Python package (python/ple_runtime).
//!
//! It calls the `ple` library directly (no C ABI in between): models, sessions and pools are Rust
//! objects owned by Python ones, columns are numpy arrays read in place, and every scoring call
//! releases the GIL. The Python modules (`model.py`, `inputs.py`) keep the public API and every
//! input form; this crate gives them a fast path for arrays that are already right and a general
//! path for the columns they normalised.
//!
//! Layout: `error.rs` (statuses and the exception), `model.rs` (the model, its sessions, warm-up),
//! `pool.rs`, `predict.rs` (both scoring paths), `cli.rs` (the `ple` tool).

use pyo3::prelude::*;

mod cli;
mod error;
mod model;
mod pool;
mod predict;

/// Version of the ple library this extension was built from ("MAJOR.MINOR.PATCH").
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The SIMD level a model opened now would use ("scalar", "avx2", "avx512", "neon").
#[pyfunction]
fn simd_level() -> &'static str {
    ple::SimdLevel::detect().name()
}

#[pymodule]
fn _ple(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(error::status_str, m)?)?;
    m.add_function(wrap_pyfunction!(cli::cli, m)?)?;
    m.add("Error", m.py().get_type::<error::Error>())?;
    m.add_class::<model::Model>()?;
    m.add_class::<pool::Pool>()?;
    Ok(())
}
