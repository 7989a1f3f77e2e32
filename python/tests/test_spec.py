"""Spec validation: every mistake is refused with a message naming the field."""

import copy

import numpy as np
import pytest

from _util import full_spec, layer
from ple_runtime.spec import SpecError, normalize


@pytest.fixture
def spec():
    return full_spec(np.random.default_rng(7))


def test_valid_spec_normalizes(spec):
    canon = normalize(spec)
    assert canon["x0_order"][0] == "item"
    assert canon["levels"][0]["width"] == 5
    assert canon["bottom"] is None
    # dice_bn alpha is broadcast to per channel, weights become float64
    assert canon["levels"][0]["task_experts"][0][0][0]["weight"].dtype == np.float64


def test_in_out_layout_is_transposed():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 2))  # Keras kernel [in=3, out=2]
    base = {"name": "k", "features": [{"name": "x", "kind": "dense", "width": 3}],
            "towers": [{"mlp": [{"weight": w, "weight_layout": "in_out", "activation": "identity"}], "input": "x0"}]}
    canon = normalize(base)
    assert np.array_equal(canon["towers"][0]["mlp"][0]["weight"], w.T)


def mutate(spec, fn):
    s = copy.deepcopy(spec)
    fn(s)
    return s


CASES = [
    (lambda s: s.update(name=""), r"^name: .* 1-255 bytes"),
    (lambda s: s.update(name="a\nb"), "control character"),
    (lambda s: s.update(name="x" * 256), "1-255 bytes"),
    (lambda s: s["features"][0].update(table="nope"), r"features\[0\] \(user\)\.table"),
    (lambda s: s["features"].append(dict(s["features"][0])), "duplicate names"),
    (lambda s: s["features"][2].update(pooling="concat"), r"features\[2\]\.pooling"),
    (lambda s: s["features"][2].update(max_len=0), r"features\[2\]\.max_len"),
    (lambda s: s["features"][4].update(kind="image"), r"features\[4\]\.kind"),
    (lambda s: s["tables"].update(unused=np.zeros((2, 2))), "not used by any feature"),
    (lambda s: s.update(x0_order=["user"]), "x0_order"),
    (lambda s: s["levels"][0]["task_gates"][0][0].update(activation="softmax"), "implicit"),
    (lambda s: s["levels"][1].update(shared_gate=s["levels"][0]["shared_gate"]), r"levels\[1\]\.shared_gate: the last level"),
    (lambda s: s["levels"][0].update(shared_gate=None), r"levels\[0\]\.shared_gate: missing"),
    (lambda s: s["levels"][0]["shared_experts"][0].pop(), "same output width"),
    (lambda s: s["levels"][0]["task_experts"][1].pop(), "same number of experts"),
    (lambda s: s["levels"][0]["task_gates"].pop(), "one gate per task"),
    (lambda s: s["levels"][0]["task_experts"][0][0][1].update(weight=np.zeros((5, 7))),
     r"levels\[0\]\.task_experts\[0\]\[0\]\[1\]\.weight: reads 7 inputs"),
    (lambda s: s["levels"][0]["task_experts"][0][0][0].update(bias=np.zeros(2)), r"\[0\]\.bias: expected shape"),
    (lambda s: s["levels"][0]["task_experts"][0][0][0]["weight"].__setitem__((0, 0), np.nan), "NaN"),
    (lambda s: s["levels"][0]["task_experts"][0][0][0].update(activation="gelu"), "activation: 'gelu'"),
    (lambda s: s["levels"][0]["task_experts"][0][0][0].update(slope=0.1), r"\['slope'\] given"),
    (lambda s: s["levels"][0]["task_experts"][0][1][0].update(prelu_weight=np.zeros(4)), "prelu_weight"),
    (lambda s: s["levels"][0]["task_experts"][0][0][0]["bn"].update(var=-np.ones(6)), "var \\+ eps"),
    (lambda s: s["towers"][0].update(input="bottom"), r"towers\[0\]\.input: 'bottom' needs"),
    (lambda s: s["towers"][0].update(activation="softmax"), r"towers\[0\]\.activation"),
    (lambda s: s.update(towers=[]), "towers"),
    (lambda s: s["outputs"].append({"name": "p", "product": [0, 1]}), "different widths"),
    (lambda s: s["outputs"].append({"name": "ctr", "tower": 1}), "duplicate names"),
    (lambda s: s["outputs"].append({"name": "z", "tower": 5}), r"outputs\[2\]\.tower"),
    (lambda s: (s.update(levels=[]), s["towers"][0].update(input="level")), r"towers\[0\]\.input: 'level' needs"),
    (lambda s: s.update(extra=1), "unknown keys"),
    (lambda s: s["features"][0].update(vectors=1), r"features\[0\]\.vectors: expected a bool"),
    (lambda s: (s["features"][3].update(vectors=True), s["tables"]["items"].__setitem__((0, 1), 40.0)),
     r"features\[3\] \(hist_max\)\.vectors: max pooling with pad id 0 needs the table"),
]


def test_vectors_keep_the_table_in_the_spec_and_mark_the_feature(spec):
    spec["features"][3]["vectors"] = True  # hist_max: max pooling, pad row of N(0, 1) values: |E[pad]| < 32
    canon = normalize(spec)
    assert canon["features"][3]["vectors"] is True and "vectors" not in canon["features"][2]


@pytest.mark.parametrize("fn, message", CASES)
def test_invalid_specs(spec, fn, message):
    with pytest.raises(SpecError, match=message):
        normalize(mutate(spec, fn))


def test_mmoe_and_shared_bottom_shapes():
    rng = np.random.default_rng(0)
    feats = [{"name": "x", "kind": "dense", "width": 4}]
    mmoe = {"name": "m", "features": feats,
            "levels": [{"task_experts": [[], []], "shared_experts": [[layer(rng, 3, 4)] for _ in range(3)],
                        "task_gates": [[layer(rng, 3, 4, "identity")] for _ in range(2)]}],
            "towers": [{"mlp": [layer(rng, 1, 3, "identity")]} for _ in range(2)]}
    canon = normalize(mmoe)
    assert canon["towers"][0]["input"] == "level" and canon["outputs"][1]["name"] == "task1"
    sb = {"name": "sb", "features": feats, "bottom": [layer(rng, 5, 4)],
          "towers": [{"mlp": [layer(rng, 1, 5, "identity")]}]}
    assert normalize(sb)["towers"][0]["input"] == "bottom"
    with pytest.raises(SpecError, match="S \\+ SH >= 1"):
        normalize({**mmoe, "levels": [{"task_experts": [[], []], "shared_experts": [], "task_gates": []}]})


def test_working_size_cap_is_the_runtimes():
    """FORMAT.md 3.8: x0 + every layer's output + one expert width per gate mixture + every
    product output, at most 2^20 floats per sample (the Rust reader's rule)."""
    from ple_runtime.spec import working_floats

    def dense(width):
        return {"name": "w", "features": [{"name": "x", "kind": "dense", "width": width}],
                "towers": [{"mlp": [{"weight": np.zeros((1, width)), "activation": "identity"}], "input": "x0"}]}

    assert working_floats(normalize(dense(5))) == 5 + 1
    normalize(dense((1 << 20) - 1))  # exactly 2^20 floats
    with pytest.raises(SpecError, match="working size 1048577 floats is over the cap 1048576"):
        normalize(dense(1 << 20))
