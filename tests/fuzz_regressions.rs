//! Replays fuzz inputs through the same checks the fuzz targets make (`ple_testkit::fuzz_checks`,
//! which the fuzz crate calls too), so `cargo test` keeps them covered without cargo-fuzz or a nightly:
//!
//! - the committed seed corpus, fuzz/corpus/<target>/*;
//! - every input that once crashed a target, tests/fuzz_regressions/<target>/* (minimised
//!   libFuzzer artifacts; see docs/FUZZING.md for how to add one).
//!
//! <target> is `load`, `load_fixed_checksums` or `score`.

use ple_testkit::fuzz_checks as checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        root.join("fuzz/corpus").join(target),
        root.join("tests/fuzz_regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if path.is_file() && !name.starts_with('.') && !name.ends_with(".md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8]), min_files: usize) {
    let files = inputs(target);
    assert!(
        files.len() >= min_files,
        "expected at least {min_files} inputs for {target}, found {}",
        files.len()
    );
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: panicked on {failed:#?}");
}

#[test]
fn load_inputs_never_panic() {
    replay("load", checks::check_load, 1);
}

#[test]
fn load_fixed_checksums_inputs_never_panic() {
    replay(
        "load_fixed_checksums",
        checks::check_load_fixed_checksums,
        1,
    );
}

#[test]
fn score_inputs_never_panic() {
    replay("score", checks::check_score, 1);
}

/// Ragged sequence columns (flag 0x80 of `check_score`; a third of the calls padded) on a
/// deterministic sweep of random inputs, half of them chaotic: every valid call must score what its padded form scores, bit for
/// bit, and every malformed one must fail with the outputs untouched (the checks inside
/// `check_score`). Complements the coverage-guided fuzzer, which needs cargo-fuzz.
#[test]
fn ragged_score_sweep() {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u8
    };
    for i in 0..4000u32 {
        let mut data: Vec<u8> = (0..96).map(|_| next()).collect();
        data[1] = 0x80 | (data[1] & 3);
        if i % 4 == 0 {
            data[1] &= !2; // some well-formed calls (no chaos) for sure
        }
        if i % 3 == 0 {
            data[1] &= !0x80; // and padded ones (swapped kinds: embedding vectors)
        }
        checks::check_score(&data);
    }
}

/// The harness itself: with no input at all each check still runs (and the score check then
/// scores an empty batch on the first fixture).
#[test]
fn empty_inputs() {
    checks::check_load(&[]);
    checks::check_load_fixed_checksums(&[]);
    checks::check_score(&[]);
}

/// Every fixture model passes the load checks, with both the best and the scalar kernels (bit 0
/// of byte 60, the data CRC's first byte, selects scalar: see `checks::load_options`).
#[test]
fn fixtures_pass_load_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let sub = entry.unwrap().path();
        for name in ["model.ple", "model_f16.ple"] {
            let path = sub.join(name);
            if let Ok(bytes) = std::fs::read(&path) {
                for scalar in [false, true] {
                    let mut file = bytes.clone();
                    file[60] = (file[60] & !1) | scalar as u8;
                    checks::check_load(&file);
                    checks::check_load_fixed_checksums(&file);
                }
                n += 1;
            }
        }
    }
    assert!(n >= 13, "found only {n} fixture models");
}
