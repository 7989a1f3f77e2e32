#!/usr/bin/env bash
# Runs one fuzz target for a fixed time. Usage: fuzz/run.sh TARGET SECONDS
#   TARGET: load | load_fixed_checksums | score
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags
# (-Zsanitizer=address) to the stable compiler, whose rust-std ships the ASan runtime.
# The working corpus lives outside the repository (FUZZ_CORPUS_DIR, default /tmp/ple-fuzz-corpus);
# the committed seeds in fuzz/corpus/TARGET are read, never written. Crashes land in
# fuzz/artifacts/TARGET/ (git-ignored). Runs one process (no -jobs/-workers), under nice.
set -uo pipefail

target=${1:?usage: fuzz/run.sh TARGET SECONDS}
secs=${2:?usage: fuzz/run.sh TARGET SECONDS}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! command -v cargo-fuzz >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo-fuzz" ]; then
    cargo install cargo-fuzz --version 0.13.2 --locked || exit 1
fi
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1

work=${FUZZ_CORPUS_DIR:-/tmp/ple-fuzz-corpus}/$target
mkdir -p "$work" "fuzz/artifacts/$target"
log=${FUZZ_LOG:-/tmp/ple-fuzz-$target.log}

# -O: optimised, -a: debug assertions (overflow checks) on, ASan on (cargo-fuzz's default).
cargo fuzz build -O -a "$target" || exit 1
start=$(date +%s)
nice -n 19 cargo fuzz run -O -a "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    ${FUZZ_EXTRA_ARGS:-} 2>&1 | tee "$log" | grep -E '^(#[0-9]+[[:space:]]+(INITED|pulse|DONE)|Done|stat::|==[0-9]+==|SUMMARY|thread)'
status=${PIPESTATUS[0]}
elapsed=$(( $(date +%s) - start ))

execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
corpus=$(find "$work" -type f | wc -l)
crashes=$(find "fuzz/artifacts/$target" -type f | wc -l)
echo "RESULT target=$target seconds=$elapsed executions=${execs:-?} exec_per_sec=${rate:-?} corpus=$corpus crashes_in_artifacts=$crashes exit=$status"
exit "$status"
