//! `Model::from_bytes` on arbitrary bytes; a file that loads is then scored (see
//! `ple_testkit::fuzz_checks::check_load`). Most mutations die at the metadata CRC check: the
//! `load_fixed_checksums` target recomputes the checksums first to get past it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ple_testkit::fuzz_checks::check_load(data);
});
