"""The generic path, DeepCTR (TensorFlow/Keras) PLE: a spec built from Keras-shaped weights.

tensorflow-cpu is not installed in CI (its 2.15 wheel alone is ~200 MB), so the
Keras model is stood in for by (1) random weights with exactly the shapes and roles a
DeepCTR 0.9.x Keras PLE holds (kernels [in, out], BatchNormalization eps 1e-3 with
moving statistics, a bias-free gate Dense with softmax, a bias-free tower head plus
PredictionLayer's global_bias, Dice with a non-affine eps-1e-9 BatchNormalization) and
(2) an independent float64 numpy forward pass of the Keras semantics written here from
docs/SEMANTICS.md, "DeepCTR 0.9.4" (not from ple_runtime.reference). The spec
is built by the mapping docs/EXPORT.md shows (keras_ple_spec below, the same code), written
with ple_runtime.write and scored by libple through ple_runtime.Model.
"""

import numpy as np
import pytest

import ple_runtime
from _util import rel_err
from ple_runtime import _native

try:
    _native.lib()
except ple_runtime.LibraryNotFound as exc:  # pragma: no cover
    pytest.skip(f"libple not found: {exc}", allow_module_level=True)

# A DeepCTR feature-column list, in column order (dense first on purpose: x0 puts it last).
COLUMNS = [
    ("dense", "ctx", 3),
    ("sparse", "user", 30, 4),
    ("varlen", "hist", 40, 4, 5, "mean"),
    ("sparse", "item", 40, 4),
    ("varlen", "clicks", 25, 4, 4, "max"),
    ("dense", "price", 1),
    ("varlen", "tags", 12, 4, 3, "sum"),
]
TASKS = [("ctr", "binary"), ("dwell", "regression")]
LEVELS, S, SH = 2, 2, 1
EXPERT_UNITS, GATE_UNITS, TOWER_UNITS = (8, 6), (4,), (5,)
BN_EPS, DICE_EPS = 1e-3, 1e-9


def x0_width():
    return sum(c[3] if c[0] != "dense" else c[2] for c in COLUMNS)


# --------------------------------------------------------------------------- Keras-shaped weights


def random_dnn(rng, n_in, units, use_bn, activation):
    """What DeepCTR's DNN layer holds: kernel{i} [in, out], bias{i} [out], one
    BatchNormalization (gamma, beta, moving_mean, moving_variance) per layer if use_bn,
    and for Dice one dice_alpha [out] plus a non-affine BatchNormalization (moving stats)."""
    layers = []
    for n_out in units:
        lay = {"kernel": rng.normal(0, 1.2 / np.sqrt(n_in), (n_in, n_out)), "bias": rng.normal(0, 0.3, n_out)}
        if use_bn:
            lay["bn"] = {"gamma": rng.uniform(0.6, 1.4, n_out), "beta": rng.normal(0, 0.3, n_out),
                         "moving_mean": rng.normal(0, 0.3, n_out), "moving_variance": rng.uniform(0.4, 2.0, n_out)}
        if activation == "dice":
            lay["dice"] = {"dice_alpha": rng.uniform(-0.8, 0.8, n_out), "moving_mean": rng.normal(0, 0.3, n_out),
                           "moving_variance": rng.uniform(0.4, 2.0, n_out)}
        layers.append(lay)
        n_in = n_out
    return layers


def random_keras_ple(rng, activation, use_bn):
    """Keras layer name -> weights, as a DeepCTR PLE names its layers."""
    w = {}
    for c in COLUMNS:
        if c[0] == "sparse":
            w[f"sparse_emb_{c[1]}"] = rng.normal(0, 0.6, (c[2], c[3]))
        elif c[0] == "varlen":
            w[f"sparse_seq_emb_{c[1]}"] = rng.normal(0, 0.6, (c[2], c[3]))
    n_in = x0_width()
    for lv in range(LEVELS):
        for task, _ in TASKS:
            for s in range(S):
                w[f"level_{lv}_task_{task}_expert_specific_{s}"] = random_dnn(rng, n_in, EXPERT_UNITS, use_bn, activation)
            w[f"level_{lv}_gate_specific_{task}"] = random_dnn(rng, n_in, GATE_UNITS, use_bn, activation)
            w[f"level_{lv}_gate_softmax_specific_{task}"] = rng.normal(0, 1.0, (GATE_UNITS[-1], S + SH))
        for k in range(SH):
            w[f"level_{lv}_expert_shared_{k}"] = random_dnn(rng, n_in, EXPERT_UNITS, use_bn, activation)
        if lv < LEVELS - 1:
            w[f"level_{lv}_gate_shared"] = random_dnn(rng, n_in, GATE_UNITS, use_bn, activation)
            w[f"level_{lv}_gate_softmax_shared"] = rng.normal(0, 1.0, (GATE_UNITS[-1], len(TASKS) * S + SH))
        n_in = EXPERT_UNITS[-1]
    for task, _ in TASKS:
        w[f"tower_{task}"] = random_dnn(rng, n_in, TOWER_UNITS, use_bn, activation)
        w[f"head_{task}"] = rng.normal(0, 1.0, (TOWER_UNITS[-1], 1))  # the unnamed Dense(1, use_bias=False)
        w[f"{task}/global_bias"] = rng.normal(0, 0.4, 1)
    return w


# --------------------------------------------------------------------------- the mapping (docs/EXPORT.md)


def keras_dnn_layers(dnn, activation):
    """DeepCTR Keras DNN weights -> spec layers ([in, out] kernels, BatchNorm eps 1e-3)."""
    out = []
    for lay in dnn:
        layer = {"weight": lay["kernel"], "weight_layout": "in_out", "bias": lay["bias"], "activation": activation}
        if "bn" in lay:
            bn = lay["bn"]
            layer["bn"] = {"gamma": bn["gamma"], "beta": bn["beta"], "mean": bn["moving_mean"],
                           "var": bn["moving_variance"], "eps": 1e-3}
        if activation == "dice":  # DeepCTR Dice: non-affine BatchNorm (eps 1e-9), per-channel alpha
            d = lay["dice"]
            layer.update(activation="dice_bn", dice_alpha=d["dice_alpha"],
                         dice_bn={"gamma": None, "beta": None, "mean": d["moving_mean"],
                                  "var": d["moving_variance"], "eps": 1e-9})
        out.append(layer)
    return out


def keras_ple_spec(w, columns, tasks, n_levels, n_specific, n_shared, activation):
    """The ple_runtime spec of a DeepCTR (Keras) PLE from its weights `w` (layer name -> arrays)."""
    features, tables, sparse, varlen, dense = [], {}, [], [], []
    for c in columns:
        if c[0] == "dense":
            features.append({"name": c[1], "kind": "dense", "width": c[2]})
            dense.append(c[1])
        elif c[0] == "sparse":
            tables[c[1]] = w[f"sparse_emb_{c[1]}"]
            features.append({"name": c[1], "kind": "sparse", "table": c[1]})
            sparse.append(c[1])
        else:  # VarLenSparseFeat: masked by id 0 (mask_zero), DeepCTR 0.9.4 gives it its own table
            tables[c[1]] = w[f"sparse_seq_emb_{c[1]}"]
            features.append({"name": c[1], "kind": "sequence", "table": c[1], "max_len": c[4],
                             "pooling": c[5], "pad_id": 0})
            varlen.append(c[1])

    def gate(prefix):
        hidden = keras_dnn_layers(w[f"level_{prefix}"], activation) if f"level_{prefix}" in w else []
        head = w[f"level_{prefix.replace('gate_', 'gate_softmax_')}"]
        return hidden + [{"weight": head, "weight_layout": "in_out", "bias": None, "activation": "identity"}]

    levels = []
    for lv in range(n_levels):
        levels.append({
            "task_experts": [[keras_dnn_layers(w[f"level_{lv}_task_{t}_expert_specific_{s}"], activation)
                              for s in range(n_specific)] for t, _ in tasks],
            "shared_experts": [keras_dnn_layers(w[f"level_{lv}_expert_shared_{k}"], activation)
                               for k in range(n_shared)],
            "task_gates": [gate(f"{lv}_gate_specific_{t}") for t, _ in tasks],
            "shared_gate": gate(f"{lv}_gate_shared") if lv < n_levels - 1 else None,
        })
    towers = []
    for t, kind in tasks:
        head = {"weight": w[f"head_{t}"], "weight_layout": "in_out", "bias": w[f"{t}/global_bias"],
                "activation": "identity"}  # Dense(1, use_bias=False) + PredictionLayer's global_bias
        towers.append({"mlp": keras_dnn_layers(w[f"tower_{t}"], activation) + [head],
                       "activation": "sigmoid" if kind == "binary" else "identity"})
    return {"name": "deepctr_keras_ple", "features": features, "tables": tables,
            "x0_order": sparse + varlen + dense, "levels": levels, "towers": towers,
            "outputs": [{"name": t, "tower": i} for i, (t, _) in enumerate(tasks)]}


# --------------------------------------------------------------------------- Keras semantics, float64


def _sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))


def keras_dnn(x, dnn, activation):
    """DeepCTR DNN.call: tensordot(x, kernel) + bias -> BatchNormalization -> activation."""
    for lay in dnn:
        y = np.tensordot(x, lay["kernel"], axes=(-1, 0)) + lay["bias"]
        if "bn" in lay:  # tf.nn.batch_normalization: x * inv + (beta - mean * inv), inv = rsqrt(var + eps) * gamma
            bn = lay["bn"]
            inv = 1.0 / np.sqrt(bn["moving_variance"] + BN_EPS) * bn["gamma"]
            y = y * inv + (bn["beta"] - bn["moving_mean"] * inv)
        if activation == "relu":
            y = np.maximum(y, 0.0)
        elif activation == "sigmoid":
            y = _sigmoid(y)
        elif activation == "tanh":
            y = np.tanh(y)
        elif activation == "dice":
            d = lay["dice"]
            p = _sigmoid((y - d["moving_mean"]) / np.sqrt(d["moving_variance"] + DICE_EPS))
            y = d["dice_alpha"] * (1.0 - p) * y + p * y
        x = y
    return x


def keras_forward(w, inputs, activation):
    """DeepCTR PLE, inference: a list of [B, 1] per task, concatenated."""
    sparse, varlen, dense = [], [], []
    for c in COLUMNS:
        if c[0] == "dense":
            dense.append(np.asarray(inputs[c[1]], np.float64).reshape(-1, c[2]))
        elif c[0] == "sparse":
            sparse.append(w[f"sparse_emb_{c[1]}"][inputs[c[1]].reshape(-1)])
        else:
            ids = inputs[c[1]]
            emb = w[f"sparse_seq_emb_{c[1]}"][ids]  # [B, L, E]
            mask = (ids != 0).astype(np.float64)[:, :, None]
            if c[5] == "sum":
                varlen.append((emb * mask).sum(1))
            elif c[5] == "mean":
                varlen.append((emb * mask).sum(1) / (mask.sum(1) + 1e-8))
            else:
                varlen.append((emb - (1 - mask) * 1e9).max(1))
    x0 = np.concatenate(sparse + varlen + dense, axis=1)
    T = len(TASKS)
    inp = [x0] * (T + 1)
    for lv in range(LEVELS):
        spec = {t: [keras_dnn(inp[i], w[f"level_{lv}_task_{t}_expert_specific_{s}"], activation) for s in range(S)]
                for i, (t, _) in enumerate(TASKS)}
        shared = [keras_dnn(inp[T], w[f"level_{lv}_expert_shared_{k}"], activation) for k in range(SH)]
        out = []
        for i, (t, _) in enumerate(TASKS):
            h = keras_dnn(inp[i], w[f"level_{lv}_gate_specific_{t}"], activation)
            logits = h @ w[f"level_{lv}_gate_softmax_specific_{t}"]
            g = np.exp(logits - logits.max(1, keepdims=True))
            g /= g.sum(1, keepdims=True)
            out.append(sum(g[:, e, None] * ex for e, ex in enumerate(spec[t] + shared)))
        if lv < LEVELS - 1:
            h = keras_dnn(inp[T], w[f"level_{lv}_gate_shared"], activation)
            logits = h @ w[f"level_{lv}_gate_softmax_shared"]
            g = np.exp(logits - logits.max(1, keepdims=True))
            g /= g.sum(1, keepdims=True)
            experts = [e for t, _ in TASKS for e in spec[t]] + shared
            out.append(sum(g[:, e, None] * ex for e, ex in enumerate(experts)))
        inp = out
    ys = []
    for i, (t, kind) in enumerate(TASKS):
        z = keras_dnn(inp[i], w[f"tower_{t}"], activation) @ w[f"head_{t}"] + w[f"{t}/global_bias"]
        ys.append(_sigmoid(z) if kind == "binary" else z)
    return np.concatenate(ys, axis=1)


def keras_inputs(rng, batch):
    """Keras-style inputs: sparse [B, 1], varlen [B, maxlen] padded with 0, dense [B, dim].
    Every max-pooled row keeps at least one real id (an all-padding max row is ~-1e9)."""
    x = {}
    for c in COLUMNS:
        if c[0] == "dense":
            x[c[1]] = rng.normal(size=(batch, c[2])).astype(np.float32)
        elif c[0] == "sparse":
            x[c[1]] = rng.integers(0, c[2], (batch, 1))
        else:
            ids = rng.integers(1, c[2], (batch, c[4]))
            lengths = rng.integers(1 if c[5] == "max" else 0, c[4] + 1, batch)
            ids[np.arange(c[4])[None, :] >= lengths[:, None]] = 0
            x[c[1]] = ids
    return x


@pytest.mark.parametrize("use_bn", [True, False])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "dice"])
def test_deepctr_keras_ple(activation, use_bn, tmp_path):
    rng = np.random.default_rng(len(activation) * 7 + use_bn)
    w = random_keras_ple(rng, activation, use_bn)
    spec = keras_ple_spec(w, COLUMNS, TASKS, LEVELS, S, SH, activation)
    ple_runtime.write(spec, tmp_path / "keras.ple")
    x = keras_inputs(rng, 96)
    want = keras_forward(w, x, activation)
    with ple_runtime.Model(tmp_path / "keras.ple") as m:
        assert m.output_names == ["ctr", "dwell"]
        assert m.input_names == [c[1] for c in COLUMNS]
        got = m.predict(x)  # sparse ids as Keras takes them, [B, 1]
    assert got.shape == want.shape == (96, 2)
    assert rel_err(got, want) <= 1e-5
    # the spec's own float64 reference agrees too (it shares no code with keras_forward)
    flat = {k: v.reshape(-1) if v.shape[1:] == (1,) and k in ("user", "item") else v for k, v in x.items()}
    assert rel_err(ple_runtime.forward(spec, flat)[0], want) <= 1e-7  # mean: len + 1e-8 vs len


def test_keras_bn_eps_matters(tmp_path):
    """With torch's eps (1e-5) instead of Keras' 1e-3 the scores visibly differ: the eps is
    part of the mapping, not a detail."""
    rng = np.random.default_rng(1)
    w = random_keras_ple(rng, "relu", True)
    for dnn in (v for v in w.values() if isinstance(v, list)):
        for lay in dnn:
            lay["bn"]["moving_variance"] = rng.uniform(1e-4, 3e-3, len(lay["bias"]))  # small variances
    spec = keras_ple_spec(w, COLUMNS, TASKS, LEVELS, S, SH, "relu")
    x = keras_inputs(rng, 32)
    want = keras_forward(w, x, "relu")
    ple_runtime.write(spec, tmp_path / "a.ple")
    assert rel_err(ple_runtime.Model(tmp_path / "a.ple").predict(x), want) <= 1e-5
    for lv in spec["levels"]:
        for e in lv["shared_experts"]:
            for lay in e:
                lay["bn"]["eps"] = 1e-5
    ple_runtime.write(spec, tmp_path / "b.ple")
    assert rel_err(ple_runtime.Model(tmp_path / "b.ple").predict(x), want) > 1e-4
