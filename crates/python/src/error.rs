//! Failures as Python sees them: `_ple.Error(status, detail)`, which `ple_runtime` turns into its
//! `PleError` (the C ABI's status numbers and fixed descriptions, the library's message).

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use ple::ffi::ple_status;

create_exception!(
    _ple,
    Error,
    PyException,
    "A call into the ple library failed: args are (status, detail)."
);

/// The error for a status and its detailed message.
pub fn raise(status: ple_status, detail: impl Into<String>) -> PyErr {
    Error::new_err((status as i32, detail.into()))
}

/// The error for a library error: its status (as the C ABI numbers it) and its message.
pub fn from_core(e: &ple::Error) -> PyErr {
    raise(ple_status::of(e), e.to_string())
}

/// The fixed description of a status number ("unknown status" for any other value).
#[pyfunction]
pub fn status_str(status: i32) -> &'static str {
    ple_status::from_i32(status).map_or("unknown status", |s| {
        s.message().to_str().unwrap_or("unknown status")
    })
}
