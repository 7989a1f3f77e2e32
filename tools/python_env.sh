#!/usr/bin/env bash
# tools/python_env.sh -- create the CPU-only Python environment for the Python side of ple-runtime.
#
# usage: tools/python_env.sh [VENV_DIR]          (default: <repo>/.venv)
#        PLE_FRAMEWORK=tensorflow tools/python_env.sh VENV_DIR
#
# Two environments, one per training framework (a user of one needs nothing of the other):
#
# PLE_FRAMEWORK=torch (the default) installs, from PyPI only:
#   * torch==2.15.0 with --no-deps, plus its pure-Python dependencies
#     (sympy, networkx, jinja2, fsspec, filelock, typing-extensions, setuptools>=77)
#   * numpy, pytest
#   * torch-rechub==0.9.0 and deepctr-torch==0.3.0 with --no-deps, plus what importing
#     their multi-task model classes needs: tqdm, scikit-learn, pandas (torch-rechub),
#     requests (deepctr-torch); pyarrow and matplotlib (the package's Table input and gate
#     heatmaps, tested here)
#   * optional: onnx, onnxruntime, onnxscript (skip with PLE_WITH_ONNX=0; a failure only warns)
#   * mlserver==1.7.1 and uvloop==0.21.0 for the MLServer runtime (python/ple_runtime/mlserver.py,
#     tested by python/tests/test_mlserver.py; skip with PLE_WITH_MLSERVER=0). uvloop is pinned
#     below 0.22: from 0.22 on, uvloop's event-loop policy no longer creates a loop on
#     get_event_loop() in the main thread, and MLServer 1.7.1's worker processes call
#     asyncio.get_event_loop() before starting one, so every worker of its default pool dies at
#     start ("There is no current event loop in thread 'MainThread'"; docs/SERVING.md).
#
# Why there is a C compiler step: the PyPI torch 2.15.0 wheel for Linux x86_64 is built against
# CUDA 13 and its shared objects have DT_NEEDED entries on libcudart.so.13, libcublas.so.13,
# libcudnn.so.9, libnccl.so.2, ... which normally come from ~3 GB of nvidia-* wheels. Without
# them `import torch` fails. Instead we generate tiny stub libraries (a few KB each) for exactly
# the missing sonames: every symbol torch imports from them, with the right symbol versions,
# is defined as a function that returns an error code (100 = cudaErrorNoDevice). They are built
# from generated C source with gcc at install time and placed in site-packages/nvidia/cuNN/lib,
# a directory that is already in the RPATH of torch's libraries. Result: torch works on the CPU,
# torch.cuda.is_available() is False, and any attempt to use CUDA fails with a normal error.
#
# Notes: `pip check` will list torch's CUDA requirements as missing (intended). torch reports
# version 2.15.0+cu132 and torch.backends.cudnn.version() the cuDNN it was built for, but no
# CUDA call can succeed. For a real GPU do not use this script: make a separate venv with a plain
# `pip install torch==2.15.0` (all its nvidia-* dependencies, several GB).
# deepctr_torch asks PyPI for a newer release in a thread on import; tests can silence that
# by replacing requests.get before importing it (see VERIFY_PY below).
#
# PLE_FRAMEWORK=tensorflow installs, from PyPI only, and no torch at all:
#   * tensorflow-cpu==2.21.0 (with its dependencies: keras 3, h5py, numpy, ...), numpy, pytest
#   * tf-keras==2.21.0 and deepctr==0.9.4 with --no-deps: tf-keras declares `tensorflow`
#     (the 570 MB wheel) as its only dependency, which would install a second copy of the same
#     modules next to tensorflow-cpu; deepctr's own requirements (h5py, requests) are installed
#     with tensorflow-cpu. `pip check` therefore reports tf-keras's `tensorflow` as missing
#     (intended: tensorflow-cpu provides the same package).
#   DeepCTR 0.9.4 is written for Keras 2: it runs on TensorFlow 2.21 only through tf-keras, with
#   TF_USE_LEGACY_KERAS=1 set before tensorflow is imported (the verification step does so).
#   The verification builds and predicts a DeepCTR PLE and checks that torch is not importable.
#
# Idempotent: a stamp in the venv records what was installed; re-running only re-verifies.
# Environment knobs: PYTHON (interpreter used to create the venv, default python3.11),
#   PLE_FRAMEWORK=torch|tensorflow (which environment, default torch),
#   PLE_WITH_ONNX=0 (skip onnx; torch only), PLE_WITH_MLSERVER=0 (skip mlserver; torch only),
#   PLE_ENV_FORCE=1 (redo every install step).
set -euo pipefail

# Everything is inside main() so that bash parses the whole file before running any of it.
main() {

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
VENV=$(realpath -m "${1:-$REPO/.venv}")
WITH_ONNX=${PLE_WITH_ONNX:-1}
WITH_MLSERVER=${PLE_WITH_MLSERVER:-1}
FRAMEWORK=${PLE_FRAMEWORK:-torch}
FORCE=${PLE_ENV_FORCE:-0}
T0=$SECONDS

if [ -t 1 ]; then B=$'\033[1m' Y=$'\033[1;33m' R=$'\033[1;31m' N=$'\033[0m'; else B= Y= R= N=; fi
log() { printf '%s[python_env]%s %s\n' "$B" "$N" "$*"; }
warn() { printf '%s[python_env] WARNING:%s %s\n' "$Y" "$N" "$*" >&2; }
die() { printf '%s[python_env] ERROR:%s %s\n' "$R" "$N" "$*" >&2; exit 1; }

# ---------------------------------------------------------------- requirements
TORCH_VERSION=2.15.0
# torch's own pure-Python requirements (from its wheel metadata), numpy, pytest,
# the import-time requirements of torch-rechub / deepctr-torch model classes, and what the
# package's optional features are tested with: pyarrow (Table input) and matplotlib (gate heatmaps).
BASE_REQS=(
  "setuptools>=77.0.3" "sympy>=1.13.3" "networkx>=2.5.1" jinja2 "fsspec>=0.8.5" filelock
  "typing-extensions>=4.13.0" numpy pytest
  tqdm scikit-learn pandas requests
  pyarrow matplotlib
)
NODEPS_REQS=("torch==$TORCH_VERSION" "torch-rechub==0.9.0" "deepctr-torch==0.3.0")
ONNX_REQS=(onnx onnxruntime onnxscript)
# The MLServer runtime's server and its uvloop pin (see the header for why uvloop < 0.22).
MLSERVER_REQS=("mlserver==1.7.1" "uvloop==0.21.0")
# PLE_FRAMEWORK=tensorflow (see the header for why tf-keras and deepctr go in with --no-deps)
TF_REQS=("tensorflow-cpu==2.21.0" numpy pytest "h5py>=3.7.0" requests)
TF_NODEPS_REQS=("tf-keras==2.21.0" "deepctr==0.9.4")

APT_UPDATED=0
apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    die "missing system package(s): $* -- install them and re-run"
  fi
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# ---------------------------------------------------------------- stub generator (Python)
# Reads torch/lib/*.so with a small ELF parser (standard library only), finds the DT_NEEDED
# sonames that cannot be resolved, and writes <soname>.c (+ <soname>.map version script) for
# each, defining every undefined symbol torch imports from it.
read -r -d '' STUBGEN_PY <<'PYEOF' || true
import os, re, struct, subprocess, sys

SHT_DYNSYM, SHT_DYNAMIC, SHT_GNU_versym, SHT_GNU_verneed = 11, 6, 0x6FFFFFFF, 0x6FFFFFFE
DT_NEEDED, DT_RPATH, DT_RUNPATH = 1, 15, 29
STT_OBJECT, STT_TLS, STB_WEAK = 1, 6, 2
MARKER = "CUDA is not available (CPU-only stub library)"


class Elf:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            ident = f.read(16)
            if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
                raise ValueError(f"{path}: not a little-endian ELF64 file")
            v = struct.unpack("<HHIQQQIHHHHHH", f.read(48))
            shoff, shentsize, shnum = v[5], v[10], v[11]
            f.seek(shoff)
            raw = f.read(shentsize * shnum)
            secs = [struct.unpack_from("<IIQQQQIIQQ", raw, i * shentsize) for i in range(shnum)]
            # (name, type, flags, addr, offset, size, link, info, align, entsize)

            def data(s):
                f.seek(s[4])
                return f.read(s[5])

            def by_type(t):
                return next((s for s in secs if s[1] == t), None)

            self.needed, self.rpath, self.undefined, self.defined = [], [], [], set()
            dyn = by_type(SHT_DYNAMIC)
            if dyn:
                strs, buf = data(secs[dyn[6]]), data(dyn)
                for off in range(0, len(buf), 16):
                    tag, val = struct.unpack_from("<qQ", buf, off)
                    if tag == 0:
                        break
                    if tag == DT_NEEDED:
                        self.needed.append(cstr(strs, val))
                    elif tag in (DT_RPATH, DT_RUNPATH):
                        origin = os.path.dirname(os.path.abspath(path))
                        for p in cstr(strs, val).split(":"):
                            if p:
                                self.rpath.append(os.path.normpath(p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)))
            sym = by_type(SHT_DYNSYM)
            if not sym:
                return
            strs, syms = data(secs[sym[6]]), data(sym)
            vs = by_type(SHT_GNU_versym)
            versym = data(vs) if vs else None
            vermap = {}  # version index -> (version name, file it is needed from)
            vn = by_type(SHT_GNU_verneed)
            if vn:
                buf, vstr, off = data(vn), data(secs[vn[6]]), 0
                for _ in range(vn[7]):
                    _, cnt, vfile, aux, nxt = struct.unpack_from("<HHIII", buf, off)
                    aoff = off + aux
                    for _ in range(cnt):
                        _, _, other, name, anxt = struct.unpack_from("<IHHII", buf, aoff)
                        vermap[other] = (cstr(vstr, name), cstr(vstr, vfile))
                        if not anxt:
                            break
                        aoff += anxt
                    if not nxt:
                        break
                    off += nxt
            for i in range(1, len(syms) // 24):
                st_name, st_info, _, shndx, _, _ = struct.unpack_from("<IBBHQQ", syms, i * 24)
                name = cstr(strs, st_name)
                if not name:
                    continue
                if shndx != 0:
                    self.defined.add(name)
                    continue
                ver = vfile = None
                if versym:
                    vi = struct.unpack_from("<H", versym, i * 2)[0] & 0x7FFF
                    ver, vfile = vermap.get(vi, (None, None))
                self.undefined.append((name, st_info & 0xF, st_info >> 4, ver, vfile))


def cstr(buf, off):
    return buf[off:buf.index(b"\0", off)].decode()


def ldconfig_libs():
    out = ""
    for exe in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            out = subprocess.run([exe, "-p"], capture_output=True, text=True).stdout
            break
        except OSError:
            continue
    libs = {}
    for line in out.splitlines():
        m = re.match(r"\s+(\S+) \(([^)]*)\) => (\S+)", line)
        if m and "x86-64" in m.group(2):
            libs.setdefault(m.group(1), m.group(3))
    return libs


# owner of a symbol that torch linked without a symbol version, by name prefix
PREFIXES = [
    ("cusparseLt", "libcusparseLt.so"), ("cusparse", "libcusparse.so"), ("cublasLt", "libcublasLt.so"),
    ("cublas", "libcublas.so"), ("cudnn", "libcudnn.so"), ("cufft", "libcufft.so"), ("cuFile", "libcufile.so"),
    ("cusolver", "libcusolver.so"), ("nccl", "libnccl.so"), ("nvrtc", "libnvrtc.so"), ("nvshmem", "libnvshmem_host.so"),
    ("cupti", "libcupti.so"), ("nvJitLink", "libnvJitLink.so"), ("nvtx", "libnvToolsExt.so"), ("cuda", "libcudart.so"),
    ("cu", "libcuda.so"),
]
# functions returning `const char *` (the driver API's cuGetErrorString returns CUresult instead)
STRING_RET = re.compile(r"^(?!cu[A-Z]).*((Error|Status)(String|Name)$|^ncclGetLastError$)")
# functions returning a pointer: NULL
NULL_RET = re.compile(r"^nvshmemx?_(malloc|calloc|align|ptr|mc_ptr)$")
# clearing/peeking the sticky error state succeeds
ZERO_RET = {"cudaGetLastError", "cudaPeekAtLastError"}


def cudnn_version(libdir):
    """cuDNN version torch was built for, from the torch wheel metadata (None if unknown)."""
    site = os.path.dirname(os.path.dirname(libdir))
    for d in os.listdir(site):
        if d.startswith("torch-") and d.endswith(".dist-info"):
            try:
                meta = open(os.path.join(site, d, "METADATA")).read()
            except OSError:
                continue
            m = re.search(r"nvidia-cudnn-cu\d+\s*==\s*(\d+)\.(\d+)\.(\d+)", meta)
            if m:
                return tuple(int(x) for x in m.groups())
    return None


def main():
    libdir, outdir = os.path.abspath(sys.argv[1]), sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    names = sorted(fn for fn in os.listdir(libdir) if re.search(r"\.so(\.\d+)*$", fn))
    elfs = {fn: Elf(os.path.join(libdir, fn)) for fn in names}
    system = ldconfig_libs()

    def found(so, elf):
        if so in elfs or so in system:
            return True
        return any(os.path.exists(os.path.join(d, so)) for d in elf.rpath)

    # libcuda.so.1 is the GPU driver: only libcaffe2_nvrtc.so (dlopen-ed lazily, for CUDA work) needs it.
    # Never stub it, so that a stub can never shadow a real driver.
    missing = {so for e in elfs.values() for so in e.needed if not found(so, e)} - {"libcuda.so.1"}
    manifest = open(os.path.join(outdir, "manifest.txt"), "w")
    if not missing:
        return

    # where to put the stubs: a directory in the RPATH of every object that needs one
    users = [e for e in elfs.values() if any(so in missing for so in e.needed)]
    common = [d for d in users[0].rpath if all(d in e.rpath for e in users)]
    pick = [d for d in common if re.search(r"/nvidia/cu\d+/lib$", d)] or \
           [d for d in common if "/nvidia/" in d] or [d for d in common if d == libdir] or common
    if not pick:
        sys.exit("stubgen: torch's libraries share no RPATH directory; cannot place stubs")
    manifest.write(f"STUBDIR {pick[0]}\n")

    defined = set()
    for e in elfs.values():
        defined |= e.defined
    for so, path in system.items():
        if any(so in e.needed for e in users):
            defined |= Elf(path).defined

    stubs = {so: {"versions": set(), "syms": {}} for so in missing}
    skipped = set()
    for e in users:
        mine = [so for so in e.needed if so in missing]
        for name, typ, bind, ver, vfile in e.undefined:
            if vfile is not None:
                if vfile not in missing:
                    continue
                targets = [vfile]
                stubs[vfile]["versions"].add(ver)
            else:
                if name in defined or bind == STB_WEAK:
                    continue
                targets = []
                for prefix, base in PREFIXES:
                    if name.startswith(prefix):
                        targets = [so for so in mine if so == base or so.startswith(base + ".")]
                        break
                if not targets:  # e.g. the CPython C API: provided by the host process
                    skipped.add(name)
                    continue
            for so in targets:
                old = stubs[so]["syms"].get(name, (None, None))
                stubs[so]["syms"][name] = (STT_OBJECT if STT_OBJECT in (typ, old[0]) else typ, ver or old[1])

    cudnn = cudnn_version(libdir)
    for so in sorted(stubs):
        st = stubs[so]
        c = [f"/* Generated by tools/python_env.sh: CPU-only stub for {so}. Every entry point */",
             "/* fails as if no CUDA device were present (100 == cudaErrorNoDevice). */",
             f'static const char stub_msg[] = "{MARKER}";',
             "__attribute__((used)) const char *cpu_stub_marker(void) { return stub_msg; }", ""]
        for name in sorted(st["syms"]):
            typ = st["syms"][name][0]
            if typ == STT_TLS:
                c.append(f"__thread char {name}[64] __attribute__((aligned(16)));")
            elif typ == STT_OBJECT:
                c.append(f"char {name}[4096] __attribute__((aligned(64)));")
            elif cudnn and name == "cudnnGetVersion":
                c.append(f"unsigned long {name}(void) {{ return {cudnn[0] * 10000 + cudnn[1] * 100 + cudnn[2]}UL; }}")
            elif cudnn and name == "cudnnGetProperty":
                c.append(f"int {name}(int type, int *value) {{ if (!value || type < 0 || type > 2) return 2000; "
                         f"*value = type == 0 ? {cudnn[0]} : type == 1 ? {cudnn[1]} : {cudnn[2]}; return 0; }}")
            elif STRING_RET.search(name):
                c.append(f"const char *{name}(void) {{ return stub_msg; }}")
            elif NULL_RET.search(name):
                c.append(f"void *{name}(void) {{ return (void *)0; }}")
            elif name in ZERO_RET:
                c.append(f"int {name}(void) {{ return 0; }}")
            else:
                c.append(f"int {name}(void) {{ return 100; }}")
        with open(os.path.join(outdir, so + ".c"), "w") as fh:
            fh.write("\n".join(c) + "\n")
        has_map = 0
        if st["versions"]:
            has_map = 1
            vers = sorted(st["versions"])
            with open(os.path.join(outdir, so + ".map"), "w") as fh:
                for v in vers:  # symbols referenced without a version go to the first node
                    fh.write(v + " {\n  global:\n")
                    if v == vers[0]:
                        fh.write("    cpu_stub_marker;\n")
                    for name in sorted(n for n, (_, sv) in st["syms"].items() if (sv or vers[0]) == v):
                        fh.write(f"    {name};\n")
                    fh.write("  local: *;\n};\n" if v == vers[0] else "};\n")
        manifest.write(f"{so} {len(st['syms'])} {has_map}\n")
    print(f"stubgen: {len(stubs)} missing sonames; {sum(len(s['syms']) for s in stubs.values())} symbols stubbed; "
          f"{len(skipped)} other unresolved names (CPython C API etc.) left to the host process", file=sys.stderr)


main()
PYEOF

# ---------------------------------------------------------------- verification (Python)
read -r -d '' VERIFY_PY <<'PYEOF' || true
import sys, warnings
warnings.filterwarnings("ignore")
import numpy as np
import torch
print(f"  python {sys.version.split()[0]}, torch {torch.__version__}, numpy {np.__version__}")
print(f"  torch.cuda.is_available() = {torch.cuda.is_available()}")
rng = np.random.default_rng(0)
A, B = rng.standard_normal((32, 64)), rng.standard_normal((64, 16))
lin = torch.nn.Linear(64, 16).eval()
with torch.no_grad():
    got = lin(torch.from_numpy(A).float()).double().numpy()
ref = A @ lin.weight.detach().double().numpy().T + lin.bias.detach().double().numpy()
err = float(np.abs(got - ref).max())
sm = torch.softmax(torch.from_numpy(A).float(), 1).double().numpy()
e = np.exp(A - A.max(1, keepdims=True)); err2 = float(np.abs(sm - e / e.sum(1, keepdims=True)).max())
print(f"  CPU check: nn.Linear max|err| vs numpy float64 = {err:.1e}, softmax = {err2:.1e}")
assert err < 1e-4 and err2 < 1e-6, "numeric check failed"
assert not torch.cuda.is_available()
from torch_rechub.models.multi_task import PLE, MMOE, SharedBottom, ESMM
import requests  # deepctr_torch checks PyPI for a newer release in a thread at import: keep it offline
class _Offline:
    status_code, text = 599, "{}"
requests.get = lambda *a, **k: _Offline()
from deepctr_torch.models.multitask import PLE, MMOE, SharedBottom, ESMM
import torch_rechub, deepctr_torch
print(f"  torch_rechub {torch_rechub.__version__} and deepctr_torch {deepctr_torch.__version__}: PLE/MMOE/SharedBottom/ESMM import OK")
try:
    import onnx, onnxruntime
    print(f"  onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}")
except ImportError:
    print("  onnx/onnxruntime: not installed")
PYEOF

read -r -d '' VERIFY_TF_PY <<'PYEOF' || true
import importlib.util, os, sys, warnings
os.environ["TF_USE_LEGACY_KERAS"] = "1"  # DeepCTR 0.9.4 needs Keras 2 (tf-keras) as tf.keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore")
import numpy as np
import requests  # deepctr checks PyPI for a newer release in a thread at import: keep it offline
class _Offline:
    status_code, text = 599, "{}"
requests.get = lambda *a, **k: _Offline()
import tensorflow as tf
import tf_keras
import deepctr
from deepctr.feature_column import SparseFeat, VarLenSparseFeat, DenseFeat
from deepctr.models.multitask import PLE, MMOE, SharedBottom, ESMM  # noqa: F401
print(f"  python {sys.version.split()[0]}, tensorflow {tf.__version__}, tf-keras {tf_keras.__version__}, "
      f"deepctr {deepctr.__version__}, numpy {np.__version__}")
assert tf.keras.Model is tf_keras.Model, "tf.keras is not tf-keras: TF_USE_LEGACY_KERAS=1 did not take effect"
cols = [SparseFeat("user", 10, 4), VarLenSparseFeat(SparseFeat("hist", 10, 4), 3, "mean"), DenseFeat("age", 1)]
model = PLE(cols, expert_dnn_hidden_units=(8,), tower_dnn_hidden_units=(4,), dnn_use_bn=True)
x = {"user": np.arange(5) % 10, "hist": np.arange(15).reshape(5, 3) % 10, "age": np.ones((5, 1), np.float32)}
out = model.predict(x, verbose=0)
assert len(out) == 2 and out[0].shape == (5, 1) and np.all(np.isfinite(out)), out
print(f"  DeepCTR PLE builds and predicts on tf-keras: outputs {[o.shape for o in out]}")
assert importlib.util.find_spec("torch") is None, "torch is installed: the TensorFlow environment must not have it"
print("  torch: not installed (as intended)")
PYEOF

# ---------------------------------------------------------------- 1. interpreter + venv
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null; then PY=$cand; break; fi
  done
fi
[ -n "$PY" ] || die "no python3.11 / python3 on PATH (set PYTHON=...)"

VPY=$VENV/bin/python
if [ -x "$VPY" ] && "$VPY" -c 'import sys' 2>/dev/null; then
  log "using existing venv $VENV ($("$VPY" --version))"
else
  pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$pyver" = 3.11 ] || warn "$PY is Python $pyver; this environment is meant for CPython 3.11"
  if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install "python$pyver-venv"
  fi
  log "creating venv $VENV with $PY (Python $pyver)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VPY" -m pip --disable-pip-version-check)

# ---------------------------------------------------------------- 2. fast path
case "$FRAMEWORK" in
  torch)
    STUBGEN_HASH=$(printf '%s' "$STUBGEN_PY" | sha256sum | cut -c1-16)
    WANT="v1 base=${BASE_REQS[*]} nodeps=${NODEPS_REQS[*]} onnx=$WITH_ONNX stubgen=$STUBGEN_HASH"
    if [ "$WITH_MLSERVER" = 1 ]; then WANT="$WANT mlserver=${MLSERVER_REQS[*]}"; fi
    VERIFY=$VERIFY_PY ;;
  tensorflow)
    WANT="v1 framework=tensorflow reqs=${TF_REQS[*]} nodeps=${TF_NODEPS_REQS[*]}"
    VERIFY=$VERIFY_TF_PY ;;
  *) die "PLE_FRAMEWORK=$FRAMEWORK: expected torch or tensorflow" ;;
esac
STAMP=$VENV/.ple_python_env.stamp
if [ "$FORCE" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  log "venv is already set up (stamp matches); verifying"
  if "$VPY" -c "$VERIFY"; then
    log "done in $((SECONDS - T0)) s: $VENV (activate with: source $VENV/bin/activate)"
    exit 0
  fi
  warn "verification failed; re-running the install steps"
fi
rm -f "$STAMP"

if [ "$FRAMEWORK" = tensorflow ]; then
  if "$VPY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'; then
    die "$VENV has torch installed; the TensorFlow environment must not (use a fresh directory)"
  fi
  log "installing ${TF_REQS[*]}"
  "${PIP[@]}" install --progress-bar off "${TF_REQS[@]}"
  log "installing with --no-deps (tf-keras would pull the full tensorflow wheel too): ${TF_NODEPS_REQS[*]}"
  "${PIP[@]}" install --progress-bar off --no-deps "${TF_NODEPS_REQS[@]}"
  log "verifying"
  "$VPY" -c "$VERIFY" || die "verification failed"
  printf '%s' "$WANT" > "$STAMP"
  log "done in $((SECONDS - T0)) s: $VENV (activate with: source $VENV/bin/activate; TF_USE_LEGACY_KERAS=1 for DeepCTR)"
  exit 0
fi

# ---------------------------------------------------------------- 3. pip installs
log "installing dependencies: ${BASE_REQS[*]}"
"${PIP[@]}" install --progress-bar off "${BASE_REQS[@]}"

log "installing with --no-deps (the CUDA wheels torch lists are NOT wanted): ${NODEPS_REQS[*]}"
"${PIP[@]}" install --progress-bar off --no-deps "${NODEPS_REQS[@]}"

if [ "$WITH_ONNX" = 1 ]; then
  log "installing optional ${ONNX_REQS[*]}"
  if ! "${PIP[@]}" install --progress-bar off "${ONNX_REQS[@]}"; then
    warn "could not install ${ONNX_REQS[*]}; continuing without them (only needed for the ONNX benchmark)"
  fi
else
  log "skipping onnx/onnxruntime (PLE_WITH_ONNX=0)"
fi

if [ "$WITH_MLSERVER" = 1 ]; then
  log "installing ${MLSERVER_REQS[*]} (the MLServer runtime's tests)"
  "${PIP[@]}" install --progress-bar off "${MLSERVER_REQS[@]}"
  "$VPY" -c 'import mlserver, uvloop; print(f"  mlserver {mlserver.__version__}, uvloop {uvloop.__version__}")'
else
  log "skipping mlserver (PLE_WITH_MLSERVER=0)"
fi

# ---------------------------------------------------------------- 4. CUDA stub libraries
TORCH_LIB=$("$VPY" -c 'import importlib.util, os; s = importlib.util.find_spec("torch"); print(os.path.join(s.submodule_search_locations[0], "lib"))')
[ -d "$TORCH_LIB" ] || die "torch/lib not found at $TORCH_LIB"
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT

# forget stubs from an earlier run (only files that carry our marker), so that the generator
# sees what is really missing, e.g. after torch was upgraded or real CUDA wheels were installed
SITE=$(dirname "$(dirname "$TORCH_LIB")")
while IFS= read -r -d '' old; do
  if grep -q "CPU-only stub library" "$old" 2>/dev/null; then rm -f "$old"; fi
done < <(find "$SITE/nvidia" "$TORCH_LIB" -maxdepth 3 -name '*.so*' -type f -size -1024k -print0 2>/dev/null)

log "scanning $TORCH_LIB for shared libraries that cannot be found"
"$VPY" -c "$STUBGEN_PY" "$TORCH_LIB" "$BUILD"
if ! grep -q '^STUBDIR ' "$BUILD/manifest.txt"; then
  log "every library torch needs is present; no stubs needed"
else
  STUBDIR=$(awk '$1 == "STUBDIR" {print $2}' "$BUILD/manifest.txt")
  if ! command -v gcc >/dev/null; then
    apt_install gcc
  fi
  mkdir -p "$STUBDIR"
  log "building CPU-only stubs into $STUBDIR (in torch's RPATH):"
  while read -r so nsyms hasmap; do
    [ "$so" = STUBDIR ] && continue
    args=()
    [ "$hasmap" = 1 ] && args=("-Wl,--version-script=$BUILD/$so.map")
    gcc -shared -fPIC -O1 -nostdlib -o "$STUBDIR/$so" "$BUILD/$so.c" -Wl,-soname,"$so" "${args[@]}"
    printf '    %-24s %4d symbols\n' "$so" "$nsyms"
  done < "$BUILD/manifest.txt"
fi

# ---------------------------------------------------------------- 5. verify
log "verifying"
"$VPY" -c "$VERIFY_PY" || die "verification failed"
printf '%s' "$WANT" > "$STAMP"
log "done in $((SECONDS - T0)) s: $VENV (activate with: source $VENV/bin/activate)"
}

main "$@"
exit $?
