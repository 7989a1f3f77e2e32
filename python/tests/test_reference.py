"""The float64 reference: pooling, ids, activations and gate layout (FORMAT.md 3.4-3.7, 5)."""

import numpy as np
import pytest

from _util import full_spec, inputs_for, layer
from ple_runtime import reference
from ple_runtime.spec import normalize


def seq_spec(pooling, pad_id, id_f32=False):
    table = np.arange(12, dtype=np.float64).reshape(6, 2) - 3.0
    return {"name": "s", "tables": {"t": table},
            "features": [{"name": "q", "kind": "sequence", "table": "t", "max_len": 3, "pooling": pooling,
                          "pad_id": pad_id, "id_f32": id_f32}],
            "towers": [{"mlp": [{"weight": np.eye(2), "activation": "identity"}], "input": "x0",
                        "activation": "identity"}]}


def test_sum_mean_max_pooling():
    ids = np.array([[1, 2, 0], [0, 0, 0], [5, 5, 5]])
    t = np.arange(12, dtype=np.float64).reshape(6, 2) - 3.0
    s = reference.embed(seq_spec("sum", 0), {"q": ids})
    assert np.array_equal(s, [t[1] + t[2], [0, 0], 3 * t[5]])
    m = reference.embed(seq_spec("mean", 0), {"q": ids})
    assert np.allclose(m, [(t[1] + t[2]) / 2, [0, 0], t[5]])
    m_all = reference.embed(seq_spec("mean", None), {"q": ids})  # torch-rechub padding_idx=None: all L count
    assert np.allclose(m_all, [(t[1] + t[2] + t[0]) / 3, t[0], t[5]])
    mx = reference.embed(seq_spec("max", 0), {"q": ids})
    assert np.array_equal(mx[0], np.maximum(t[1], t[2])) and np.array_equal(mx[2], t[5])
    assert np.array_equal(mx[1], (t[0].astype(np.float32) - np.float32(1e9)))  # all padding: f32 shift


def test_ids_out_of_range_name_the_feature_and_sample():
    with pytest.raises(ValueError, match="feature 'q', sample 1: id 6"):
        reference.embed(seq_spec("sum", 0), {"q": np.array([[1, 2, 0], [6, 0, 0]])})
    with pytest.raises(ValueError, match="feature 'q', sample 0: id -1"):
        reference.embed(seq_spec("sum", 0), {"q": np.array([[-1, 2, 0]])})


def test_ids_through_f32():
    f = normalize(seq_spec("sum", 0, id_f32=True))["features"][0]
    ids = np.array([[16777217, 3, 0]])
    assert reference._ids(f, ids, None)[0, 0] == 16777216
    f["id_f32"] = False
    assert reference._ids(f, ids, None)[0, 0] == 16777217


def test_dice_rechub_formula():
    x = np.array([[1.0, -2.0, 0.5]])
    lay = {"activation": "dice_rechub", "dice_alpha": np.array([0.3]), "dice_eps": 1e-3}
    avg = x.mean()
    var = np.sum((x - avg) ** 2 + 1e-3)
    p = 1 / (1 + np.exp(-(x - avg) / np.sqrt(var)))
    assert np.allclose(reference.activation(x, lay), p * x + (1 - p) * 0.3 * x, rtol=0, atol=1e-15)


def test_gates_layout_and_softmax():
    rng = np.random.default_rng(4)
    spec = full_spec(rng)
    x = inputs_for(spec, rng)
    out, gates = reference.forward(spec, x)
    assert out.shape == (9, 4)
    assert gates.shape == (9, 3 + 3 + 5 + 3 + 3)
    spans = [3, 3, 5, 3, 3]
    start = 0
    for w in spans:
        assert np.allclose(gates[:, start:start + w].sum(axis=1), 1.0)
        start += w
    assert np.allclose(out[:, 1:].sum(axis=1), 1.0)  # softmax tower (width 3)


def test_batch_independence():
    rng = np.random.default_rng(5)
    spec = full_spec(rng)
    x = inputs_for(spec, rng)
    full, _ = reference.forward(spec, x)
    one, _ = reference.forward(spec, {k: v[3:4] for k, v in x.items()})
    assert np.allclose(full[3:4], one, rtol=1e-13, atol=1e-15)  # float64 BLAS may block differently


def test_esmm_product_output():
    rng = np.random.default_rng(6)
    spec = {"name": "e", "features": [{"name": "x", "kind": "dense", "width": 3}],
            "towers": [{"mlp": [layer(rng, 2, 3), layer(rng, 1, 2, "identity")], "input": "x0"} for _ in range(2)],
            "outputs": [{"name": "ctr", "tower": 0}, {"name": "ctcvr", "product": [0, 1]}]}
    out, gates = reference.forward(spec, {"x": rng.normal(size=(4, 3)).astype(np.float32)})
    assert gates.shape == (4, 0)
    assert np.all(out[:, 1] <= out[:, 0])
