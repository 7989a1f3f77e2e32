//! Like `load`, but with both checksums recomputed first (`fix_checksums` on a copy), so the
//! mutations reach the structural validation of the header, metadata, graph and plan.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ple_testkit::fuzz_checks::check_load_fixed_checksums(data);
});
