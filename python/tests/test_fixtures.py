"""The committed golden fixtures (tests/fixtures/) are valid and self-consistent.

numpy only: every file parses strictly, model.ple scored from its stored tensors
matches expected_ref / gates_ref / expected_torch, and model_f16.ple scores exactly
like model_f16r.ple. Regenerate with tools/make_fixtures.py.
"""

import json
import os

import numpy as np
import pytest

from ple_runtime import format as fmt
from ple_runtime import numpy_runtime

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tests", "fixtures")
NAMES = sorted(d for d in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, d))) if os.path.isdir(ROOT) else []


def rel(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))) if a.size else 0.0


def load(name):
    d = os.path.join(ROOT, name)
    pf = fmt.read_header_and_meta(os.path.join(d, "model.ple"))
    x = {f.name: np.load(os.path.join(d, f"in_{f.name}.npy")) for f in pf.features}
    return d, pf, x


@pytest.mark.skipif(not NAMES, reason="no fixtures generated")
@pytest.mark.parametrize("name", NAMES)
def test_fixture(name):
    d, pf, x = load(name)
    for f in pf.features:
        v = x[f.name]
        if f.kind == fmt.KIND_DENSE:
            assert v.dtype == np.float32 and v.shape == (37, f.width)
        else:
            assert v.dtype == np.int64 and v.shape == ((37,) if f.kind == fmt.KIND_SPARSE else (37, f.max_len))
    expected_ref = np.load(os.path.join(d, "expected_ref.npy"))
    expected_torch = np.load(os.path.join(d, "expected_torch.npy"))
    gates_ref = np.load(os.path.join(d, "gates_ref.npy"))
    assert expected_ref.dtype == np.float64 and expected_torch.dtype == np.float32 and gates_ref.dtype == np.float64
    assert expected_ref.shape == expected_torch.shape == (37, pf.output_width)
    assert gates_ref.shape == (37, pf.gate_width)
    out, gates = numpy_runtime.score_file(os.path.join(d, "model.ple"), x)
    assert rel(out, expected_ref) <= 1e-5 and rel(gates, gates_ref) <= 1e-5
    assert rel(expected_ref, expected_torch.astype(np.float64)) <= 1e-5
    o16, g16 = numpy_runtime.score_file(os.path.join(d, "model_f16.ple"), x)
    o16r, g16r = numpy_runtime.score_file(os.path.join(d, "model_f16r.ple"), x)
    assert np.array_equal(o16, o16r) and np.array_equal(g16, g16r)
    pf16 = fmt.read_header_and_meta(os.path.join(d, "model_f16.ple"))
    assert any(t.dtype == fmt.DTYPE_F16 for t in pf16.tensors)


@pytest.mark.skipif(not NAMES, reason="no fixtures generated")
def test_manifest_lists_every_fixture():
    with open(os.path.join(ROOT, "manifest.json")) as fh:
        manifest = json.load(fh)
    assert sorted(manifest) == NAMES
    for name, entry in manifest.items():
        assert entry["max_rel_ref_vs_torch"] <= 1e-5
        _, pf, _ = load(name)
        assert [f["name"] for f in entry["features"]] == [f.name for f in pf.features]
        assert entry["output_width"] == pf.output_width and entry["gate_width"] == pf.gate_width
