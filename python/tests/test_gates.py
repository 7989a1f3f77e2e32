"""gate_report against gates whose weights are known in closed form: a gate MLP with zero weights
and chosen biases gives every sample softmax(bias), computed here with numpy."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import ple_runtime
from _util import full_spec, inputs_for


def _fixed(gate, logits):
    lay = gate[0]
    lay["weight"] = np.zeros_like(lay["weight"])
    lay["bias"] = np.asarray(logits, dtype=np.float64)
    lay["bn"] = None


def _softmax(z):
    e = np.exp(np.asarray(z, np.float64) - np.max(z))
    return e / e.sum()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    spec = copy.deepcopy(full_spec(np.random.default_rng(8)))
    level0 = spec["levels"][0]
    _fixed(level0["task_gates"][0], [0.0, 0.0, 8.0])  # ctr: (almost) only the shared expert
    _fixed(level0["shared_gate"], [-9.0, 0.0, 0.0, 0.0, 0.0])  # never ctr's first expert
    path = tmp_path_factory.mktemp("gates") / "m.ple"
    ple_runtime.write(spec, path)
    x = inputs_for(spec, np.random.default_rng(9), batch=64)
    return spec, path, x


def test_means_labels_and_warnings(setup):
    spec, path, x = setup
    rep = ple_runtime.gate_report(path, x)
    assert rep.samples == 64 and rep.tasks == ["ctr", "vec_out"]
    level0 = [g for g in rep.gates if g.level == 0]
    assert [g.gate for g in level0] == ["task ctr", "task vec_out", "shared"]
    ctr, shared = level0[0], level0[2]
    assert ctr.experts == ["task ctr expert 0", "task ctr expert 1", "shared 0"]
    assert shared.experts == ["task ctr expert 0", "task ctr expert 1", "task vec_out expert 0",
                              "task vec_out expert 1", "shared 0"]
    np.testing.assert_allclose(ctr.mean, _softmax([0, 0, 8]), atol=1e-6)
    np.testing.assert_allclose(shared.mean, _softmax([-9, 0, 0, 0, 0]), atol=1e-6)
    assert np.all(ctr.std < 1e-6)
    w = _softmax([0, 0, 8])
    assert ctr.entropy == pytest.approx(-(w * np.log(w)).sum(), abs=1e-5)
    # The last level has no shared gate.
    assert [g.gate for g in rep.gates if g.level == 1] == ["task ctr", "task vec_out"]
    text = "\n".join(rep.warnings)
    assert "level 0: task ctr ignores its own experts" in text
    assert "level 0: the task ctr gate has collapsed onto 'shared 0'" in text
    assert "level 0: expert 'task ctr expert 0' is unused" in text
    assert "vec_out" not in text  # random gates: healthy
    assert "task ctr expert 1" in str(rep) and "warnings:" in str(rep)


def test_a_healthy_model_has_no_warnings(tmp_path):
    spec = full_spec(np.random.default_rng(10))
    ple_runtime.write(spec, tmp_path / "m.ple")
    with ple_runtime.Model(tmp_path / "m.ple") as m:
        rep = ple_runtime.gate_report(m, inputs_for(spec, np.random.default_rng(11), batch=32))
    assert rep.warnings == [], rep.warnings
    assert "no warnings" in str(rep)


def test_to_pandas_and_plot(setup, tmp_path):
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")  # installed by tools/python_env.sh
    _, path, x = setup
    rep = ple_runtime.gate_report(path, x)
    df = rep.to_pandas()
    assert list(df.columns) == ["level", "gate", "expert", "mean", "std", "gate_entropy", "gate_normalized_entropy"]
    assert len(df) == sum(len(g.experts) for g in rep.gates)
    sums = df.groupby(["level", "gate"])["mean"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)  # each gate is a distribution
    out = tmp_path / "gates.png"
    rep.plot(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_models_without_gates_are_refused(tmp_path):
    spec = full_spec(np.random.default_rng(12))
    spec["levels"] = []
    for tw in spec["towers"]:
        tw["mlp"][0]["weight"] = np.random.default_rng(0).normal(size=(tw["mlp"][0]["weight"].shape[0], 20))
    ple_runtime.write(spec, tmp_path / "sb.ple")
    with pytest.raises(ValueError, match="no expert levels"):
        ple_runtime.gate_report(tmp_path / "sb.ple", inputs_for(spec, np.random.default_rng(1), batch=4))
