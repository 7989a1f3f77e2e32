"""The native extension's two scoring paths and the `ple` console script.

A dict of arrays the library reads as they are (native int64 / float32, C-contiguous, aligned,
right shapes) is scored in place by the extension (the fast path); every other form goes through
ple_runtime.inputs first (the converted path). Both must give the float64 reference's scores and
the same errors; these tests force each path and compare.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ple_runtime
from _util import full_spec, inputs_for, rel_err
from ple_runtime import PleError, _native
from ple_runtime.model import Model

try:
    _native.ext()
except ple_runtime.LibraryNotFound as exc:  # pragma: no cover - CI builds the extension first
    pytest.skip(f"native extension not found: {exc}", allow_module_level=True)


@pytest.fixture(scope="module")
def spec():
    return full_spec(np.random.default_rng(21))


@pytest.fixture(scope="module")
def path(spec, tmp_path_factory):
    p = tmp_path_factory.mktemp("native") / "full.ple"
    ple_runtime.write(spec, p)
    return p


@pytest.fixture(scope="module")
def x(spec):
    x = inputs_for(spec, np.random.default_rng(5), batch=17)
    return {k: np.ascontiguousarray(v, dtype=np.int64 if v.dtype.kind in "iu" else np.float32) for k, v in x.items()}


@pytest.fixture
def counted(monkeypatch):
    """Counts calls of the converted path."""
    calls = []
    original = Model._predict_converted

    def wrapper(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(Model, "_predict_converted", wrapper)
    return calls


def test_fast_path_scores_in_place(spec, path, x, counted):
    ref, ref_gates = ple_runtime.forward(spec, x)
    m = ple_runtime.Model(path)
    out, gates = m.predict(x, gates=True)
    assert not counted, "ready arrays must not be converted"
    assert rel_err(out, ref) <= 1e-5 and rel_err(gates, ref_gates) <= 1e-5
    for a in (out, gates):
        assert a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable and a.flags.owndata
    assert np.array_equal(m.predict(x, gates=1)[1], gates)  # any truthy value asks for gates
    # Sparse and width-1 columns as [B, 1] are ready too.
    y = {k: (v[:, None] if v.ndim == 1 else v) for k, v in x.items()}
    assert np.array_equal(m.predict(y), out) and not counted


def _variants(x, model):
    """Inputs equal to x in value that the fast path must hand to the converted path."""
    ids = next(i.name for i in model.inputs if i.kind == "sparse")
    seq = next(i.name for i in model.inputs if i.kind == "sequence")
    dense = next(i.name for i in model.inputs if i.kind == "dense" and i.width > 1)
    buf = np.empty(x[ids].nbytes + 1, np.uint8)
    misaligned = buf[1:].view(np.int64)
    misaligned[:] = x[ids]
    return {
        "int32 ids": {**x, ids: x[ids].astype(np.int32)},
        "float64 dense": {**x, dense: x[dense].astype(np.float64)},
        "Fortran-order sequence": {**x, seq: np.asfortranarray(x[seq])},
        "strided column": {**x, dense: np.repeat(x[dense], 2, axis=1)[:, ::2]},
        "big-endian ids": {**x, ids: x[ids].astype(">i8")},
        "misaligned ids": {**x, ids: misaligned},
        "list column": {**x, ids: x[ids].tolist()},
        "ids as whole floats": {**x, ids: x[ids].astype(np.float64)},
    }


def test_other_forms_are_converted(path, x, counted):
    m = ple_runtime.Model(path)
    want = m.predict(x)
    for name, inputs in _variants(x, m).items():
        before = len(counted)
        assert np.array_equal(m.predict(inputs), want), name
        assert len(counted) == before + 1, f"{name}: the converted path was not taken"


def test_errors_are_the_same_on_both_paths(path, x):
    m = ple_runtime.Model(path)
    bad = {**x, "user": x["user"].copy()}
    bad["user"][3] = 20
    with pytest.raises(PleError) as fast:
        m.predict(bad)
    with pytest.raises(PleError) as converted:
        m.predict({**bad, "user": bad["user"].astype(np.int32)})
    for e in (fast.value, converted.value):
        assert e.status_name == "PLE_STATUS_ID_OUT_OF_RANGE"
        assert "input 'user', sample 3, position 0: id 20" in str(e)
        assert "predict (batch 17; input 'user' has shape (17,))" in str(e)
    assert str(fast.value) == str(converted.value)
    # A batch larger than max_batch is chunked by the converted path.
    small = ple_runtime.Model(path, max_batch=5)
    assert np.array_equal(small.predict(x), m.predict(x))


def test_output_overlapping_input_is_refused(path, x):
    """The general entry point refuses an output buffer that shares memory with an input column."""
    m = ple_runtime.Model(path)
    b = len(x["user"])
    dense = next(i for i in m.inputs if i.kind == "dense")
    shared = np.zeros(b * max(dense.width, m.output_width), np.float32)
    cols = [(k, np.ascontiguousarray(v).reshape(-1)) for k, v in x.items() if k != dense.name]
    cols.append((dense.name, shared[: b * dense.width]))
    m._core.run(cols, b, np.empty((b, m.output_width), np.float32))  # separate buffers: fine
    with pytest.raises(_native.ext().Error) as info:
        m._core.run(cols, b, shared[: b * m.output_width].reshape(b, m.output_width))
    assert info.value.args[0] == 2 and "overlaps an input column" in info.value.args[1]


def _ple(*args):
    env = dict(os.environ)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(ple_runtime.__file__)))
    env["PYTHONPATH"] = pkg + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "ple_runtime_cli", *map(str, args)], capture_output=True,
                          text=True, env=env)


def test_console_script_runs_the_tool(path, tmp_path):
    r = _ple("check", path)
    assert r.returncode == 0 and r.stdout.startswith("ok  "), r.stderr
    r = _ple("inspect", path, "--json")
    assert r.returncode == 0 and json.loads(r.stdout), r.stderr
    r = _ple("inspect", tmp_path / "missing.ple")
    assert r.returncode == 1 and r.stderr.startswith("ple: error:") and not r.stdout
    r = _ple("--bogus")
    assert r.returncode == 2
