//! The `ple` command-line tool inside the wheel: the console script `ple`
//! (python/ple_runtime/_cli.py) calls [`cli`] with its arguments, so the wheel ships one native
//! file and no separate executable.

use std::ffi::OsString;
use std::io::Write;

use pyo3::prelude::*;

/// Runs `ple` with `args` (without the program name) and returns its exit code. Output goes to
/// the process's stdout and stderr; the GIL is released meanwhile.
#[pyfunction]
pub fn cli(py: Python<'_>, args: Vec<OsString>) -> u8 {
    let code = py.detach(|| ple_cli::run(&args));
    // Nothing flushes Rust's stdout at exit when Python owns the process.
    let _ = std::io::stdout().flush();
    code
}
