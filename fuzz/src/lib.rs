//! Shared checks for the fuzz targets. The same file (`checks.rs`) is included by path from
//! `tests/fuzz_regressions.rs`, so `cargo test` replays crash inputs and seeds through exactly
//! the assertions the fuzzers make.

pub mod checks;
