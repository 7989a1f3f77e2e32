#!/usr/bin/env bash
# tools/build_wheel.sh -- build the ple_runtime wheel: one file that installs and works without
# Rust on any x86-64 Linux with glibc >= 2.17 and CPython >= 3.9 (docs/EXPORT.md, "Installing").
#
# usage: bash tools/build_wheel.sh [OUT_DIR]      (default: <repo>/target/wheels)
#
# What it does:
#   1. a tools venv (default <repo>/target/wheel-tools, PLE_WHEEL_TOOLS to move it) with maturin,
#      ziglang and auditwheel from PyPI (pinned; idempotent);
#   2. `maturin build --release --zig --compatibility manylinux2014` in python/: the extension
#      crate (crates/python: the ple library, its Python bindings, the `ple` tool) linked through
#      zig against glibc 2.17, abi3 for CPython >= 3.9, with the Python package and the `ple`
#      console script. Its own cargo target dir (target/wheel-build), so switching linkers does
#      not rebuild target/release;
#   3. `auditwheel show` on the result, failing unless it is manylinux_2_17 compatible.
# Prints the wheel's path on its last line.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(realpath -m "${1:-$REPO/target/wheels}")
TOOLS=$(realpath -m "${PLE_WHEEL_TOOLS:-$REPO/target/wheel-tools}")
PYTHON=${PYTHON:-python3}
REQS=(maturin==1.16.0 ziglang==0.17.1 auditwheel==6.8.2)

if ! "$TOOLS/bin/python" -c 'import maturin, ziglang, auditwheel' 2>/dev/null; then
  echo "[build_wheel] tools venv: $TOOLS (${REQS[*]})" >&2
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --disable-pip-version-check -q "${REQS[@]}"
fi
# maturin runs zig as `python3 -m ziglang`: the tools venv's python comes first.
export PATH="$TOOLS/bin:$PATH"
export CARGO_TARGET_DIR=${PLE_WHEEL_TARGET_DIR:-$REPO/target/wheel-build}

mkdir -p "$OUT"
before=$(ls "$OUT"/*.whl 2>/dev/null || true)
(cd "$REPO/python" && maturin build --release --zig --compatibility manylinux2014 --out "$OUT" >&2)
wheel=$(ls -t "$OUT"/ple_runtime-*-cp39-abi3-*manylinux_2_17_x86_64*.whl | head -1)
[ -n "$wheel" ] || { echo "[build_wheel] no manylinux_2_17 wheel in $OUT (had: $before)" >&2; exit 1; }
auditwheel show "$wheel" >&2
auditwheel show "$wheel" 2>&1 | tr -s ' \n' ' ' | grep -q 'consistent with the following platform tag: "manylinux_2_17_x86_64"' \
  || { echo "[build_wheel] auditwheel does not find $wheel manylinux_2_17 compatible" >&2; exit 1; }
echo "$wheel"
