#!/usr/bin/env bash
# The comparison benchmark of issue 5 ("Speed"): ple vs ONNX Runtime, tract and PyTorch on
# torch-rechub PLE models, single thread, plus this machine's sgemm / bandwidth limits and the
# memory checks. Writes docs/PERFORMANCE.md and prints its tables.
#
#   bash benches/compare/run.sh            # full run (batches 1, 16, 256, 1024; ~10-15 min)
#   bash benches/compare/run.sh --quick    # smoke run (batches 1 and 256, fewer repetitions)
#
# Other options are passed to driver.py (--models criteo,large  --reps N  --min-ms MS
# --work DIR  --out FILE  --big-table-mib MIB  --seed N). Environment: PLE_BENCH_VENV (venv
# directory), PLE_BENCH_CPUS (pin everything to these CPUs with taskset). What it does:
#   1. tools/python_env.sh into $PLE_BENCH_VENV (default <repo>/.venv-bench): CPU torch,
#      torch-rechub, onnx, onnxruntime (idempotent: a second run only re-verifies);
#   2. builds the native bench binary (benches/compare/native, release; its own target dir);
#   3. runs benches/compare/driver.py, which builds and exports the models, times everything
#      and writes the report. Intermediate files go to $TMPDIR/ple-compare (or --work).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV=${PLE_BENCH_VENV:-$REPO/.venv-bench}

echo "[run.sh] Python environment: $VENV" >&2
bash "$REPO/tools/python_env.sh" "$VENV" >&2
PY=$VENV/bin/python
"$PY" -c 'import onnxruntime, onnx, torch_rechub' \
  || { echo "[run.sh] onnx/onnxruntime missing from $VENV (PLE_WITH_ONNX=0?)" >&2; exit 1; }
ORT_LIB=$("$PY" -c '
import glob, os, onnxruntime
libs = sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))
print(libs[0] if libs else "")')
[ -n "$ORT_LIB" ] || { echo "[run.sh] libonnxruntime.so not found in the onnxruntime wheel" >&2; exit 1; }
# OpenVINO is timed beside ONNX Runtime; it is a competitor, not a dependency of anything we
# ship, so it is installed here only (a failure leaves it out of the report, with a warning).
if ! "$PY" -c 'import openvino' 2>/dev/null; then
  echo "[run.sh] installing openvino into $VENV" >&2
  "$PY" -m pip install --disable-pip-version-check -q openvino >&2 \
    || echo "[run.sh] WARNING: could not install openvino; the report will not include it" >&2
fi

# The driver imports the in-tree package, which loads the extension from target/release.
echo "[run.sh] building the Python package's native extension (target/release/lib_ple.so)" >&2
cargo build --release -p ple-python --manifest-path "$REPO/Cargo.toml" >&2
echo "[run.sh] building the native bench binary (release; the first build compiles tract, a few minutes)" >&2
cargo build --release --manifest-path "$HERE/native/Cargo.toml" >&2
BIN=$HERE/native/target/release/ple-compare

# One thread everywhere (torch also calls set_num_threads(1); ORT and tract are configured so).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
cd "$REPO"
# PLE_BENCH_CPUS=1 (a taskset CPU list) pins the driver and the native binary to those CPUs.
PIN=()
if [ -n "${PLE_BENCH_CPUS:-}" ]; then PIN=(taskset -c "$PLE_BENCH_CPUS"); fi
exec "${PIN[@]}" "$PY" "$HERE/driver.py" --native "$BIN" --ort-lib "$ORT_LIB" \
  --command "bash benches/compare/run.sh" "$@"
