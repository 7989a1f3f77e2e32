//! `Session::run` on fixed valid models with arbitrary batch sizes, buffer lengths, column
//! counts, kinds, ids and floats (see `ple_testkit::fuzz_checks::check_score`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ple_testkit::fuzz_checks::check_score(data);
});
