//! The `ple` command-line tool's implementation (src/bin/ple.rs is its entry point).
