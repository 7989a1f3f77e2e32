"""The float64 forward pass of a spec: the package's one reference forward.

It follows the libraries' formulas (docs/FORMAT.md, docs/SEMANTICS.md) on a *spec*: the
unfolded spec an exporter produced (BatchNorm separate, weights in ``[out, in]`` layout),
or a written file read back as a spec (:func:`ple_runtime.reader.read_spec`, used by
:mod:`ple_runtime.numpy_runtime`). Everything runs in float64. It is the yardstick that
both the real library models (checked by ``tools/make_fixtures.py``) and the Rust runtime
(through the golden fixtures) are measured against, so it shares no code with the writer's
folding and packing.

The only f32 step is max pooling's ``E - 1e9`` shift on padded positions, which
FORMAT.md defines in f32 (DeepCTR's rule): an all-padding sample gives exactly the
f32 values the library computes.
"""

from __future__ import annotations

import numpy as np

from .spec import normalize


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so that exp never overflows.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _bn(x: np.ndarray, bn: dict) -> np.ndarray:
    """Eval BatchNorm, textbook form: (x - mean) / sqrt(var + eps) * gamma + beta."""
    return (x - bn["mean"]) / np.sqrt(bn["var"] + bn["eps"]) * bn["gamma"] + bn["beta"]


def activation(x: np.ndarray, layer: dict) -> np.ndarray:
    """Apply a canonical layer's activation to x [B, n] (FORMAT.md section 3.6)."""
    act = layer["activation"]
    if act == "identity":
        return x
    if act == "relu":
        return np.maximum(x, 0.0)
    if act == "sigmoid":
        return _sigmoid(x)
    if act == "tanh":
        return np.tanh(x)
    if act == "leaky_relu":
        return np.where(x >= 0, x, layer["slope"] * x)
    if act == "prelu":
        return np.where(x >= 0, x, layer["prelu_weight"] * x)
    if act == "dice_rechub":
        # torch-rechub Dice: per sample over the n outputs; var is a SUM including n * eps.
        avg = x.mean(axis=1, keepdims=True)
        var = ((x - avg) ** 2 + layer["dice_eps"]).sum(axis=1, keepdims=True)
        p = _sigmoid((x - avg) / np.sqrt(var))
        return p * x + (1.0 - p) * layer["dice_alpha"][0] * x
    if act == "dice_bn":
        # DeepCTR-Torch Dice (dim 2): sigmoid of its own eval BatchNorm, per channel alpha.
        p = _sigmoid(_bn(x, layer["dice_bn"]))
        return p * x + (1.0 - p) * layer["dice_alpha"] * x
    if act == "softmax":
        return _softmax(x)
    raise ValueError(f"unknown activation {act!r}")


def mlp_forward(x: np.ndarray, mlp: list[dict]) -> np.ndarray:
    """Run a canonical MLP: per layer Linear, optional BatchNorm, activation."""
    for layer in mlp:
        x = x @ layer["weight"].T
        if layer["bias"] is not None:
            x = x + layer["bias"]
        if layer["bn"] is not None:
            x = _bn(x, layer["bn"])
        x = activation(x, layer)
    return x


def _ids(feature: dict, value, batch: int | None) -> np.ndarray:
    ids = np.asarray(value)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"feature {feature['name']!r}: ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if feature["kind"] == "sparse":
        ok, want = ids.ndim == 1, "[B]"
    else:
        ok, want = ids.ndim == 2 and ids.shape[1] == feature["max_len"], f"[B, {feature['max_len']}]"
    if not ok or (batch is not None and ids.shape[0] != batch):
        raise ValueError(f"feature {feature['name']!r}: ids of shape {ids.shape}, expected {want} with B = {batch}")
    if feature["id_f32"]:
        # DeepCTR-Torch feeds ids through a float32 tensor before .long().
        ids = ids.astype(np.float32).astype(np.int64)
    return ids


def _lookup(feature: dict, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    vocab = table.shape[0]
    bad = (ids < 0) | (ids >= vocab)
    if np.any(bad):
        sample = int(np.argwhere(bad)[0][0])
        raise ValueError(f"feature {feature['name']!r}, sample {sample}: id {int(ids[bad][0])} "
                         f"is outside the table's [0, {vocab})")
    return table[ids].astype(np.float64)  # tables may be float32 or float16 (spec.normalize keeps them)


def embed(spec: dict, inputs: dict) -> np.ndarray:
    """Build x0 [B, width] in float64 from per-feature inputs (FORMAT.md sections 3.4-3.5).

    inputs: feature name -> int ids [B] (sparse) or [B, max_len] (sequence), or floats
    [B, width] (dense; [B] is accepted for width 1).
    """
    return _embed(normalize(spec), inputs)


def _pool(f: dict, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Masked sum / mean / max pooling of one sequence feature (FORMAT.md section 3.4)."""
    e = _lookup(f, table, ids)
    if f["pad_id"] is None:
        m = np.ones(ids.shape, dtype=bool)
    else:
        m = ids != f["pad_id"]
    if f["pooling"] == "sum":
        return (m[:, :, None] * e).sum(axis=1)
    if f["pooling"] == "mean":
        count = m.sum(axis=1, keepdims=True)
        return (m[:, :, None] * e).sum(axis=1) / np.where(count > 0, count, 1)
    # max: a sample with a real position takes the max over real positions; an
    # all-padding sample gets max_l f32(E[id_l] - 1e9), computed in f32 as DeepCTR does.
    real = np.where(m[:, :, None], e, -np.inf).max(axis=1)
    shifted = (table[ids].astype(np.float32) - np.float32(1e9)).max(axis=1).astype(np.float64)
    return np.where(m.any(axis=1)[:, None], real, shifted)


def _embed(spec: dict, inputs: dict) -> np.ndarray:
    parts = {}
    batch = None
    for f in spec["features"]:
        if f["name"] not in inputs:
            raise ValueError(f"missing input for feature {f['name']!r}")
        value = inputs[f["name"]]
        if f["kind"] == "dense":
            x = np.asarray(value, dtype=np.float32).astype(np.float64)
            if x.ndim == 1 and f["width"] == 1:
                x = x[:, None]
            if x.ndim != 2 or x.shape[1] != f["width"]:
                raise ValueError(f"feature {f['name']!r}: dense input of shape {x.shape}, expected [B, {f['width']}]")
        else:
            ids = _ids(f, value, batch)
            table = spec["tables"][f["table"]]
            x = _lookup(f, table, ids) if f["kind"] == "sparse" else _pool(f, table, ids)
        if batch is None:
            batch = x.shape[0]
        elif x.shape[0] != batch:
            raise ValueError(f"feature {f['name']!r}: batch {x.shape[0]}, expected {batch}")
        parts[f["name"]] = x
    return np.concatenate([parts[name] for name in spec["x0_order"]], axis=1)


def _mix(weights: np.ndarray, experts: list[np.ndarray]) -> np.ndarray:
    return np.einsum("be,bed->bd", weights, np.stack(experts, axis=1))


def forward(spec: dict, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """Score a batch: returns (outputs [B, output_width], gates [B, gate_width]), float64.

    The layouts are FORMAT.md section 5's: outputs concatenated in spec order; gate
    weights level by level, the T task gates (each S + SH wide) then the shared gate.
    """
    spec = normalize(spec)
    x0 = _embed(spec, inputs)
    batch = x0.shape[0]
    h = mlp_forward(x0, spec["bottom"]) if spec["bottom"] is not None else x0
    n_tasks = len(spec["towers"])
    sel = [h] * (n_tasks + 1)
    gates = []
    for level in spec["levels"]:
        task_out = [[mlp_forward(sel[t], e) for e in level["task_experts"][t]] for t in range(n_tasks)]
        shared_out = [mlp_forward(sel[n_tasks], e) for e in level["shared_experts"]]
        new = []
        for t in range(n_tasks):
            w = _softmax(mlp_forward(sel[t], level["task_gates"][t]))
            gates.append(w)
            new.append(_mix(w, task_out[t] + shared_out))
        if level["shared_gate"] is not None:
            w = _softmax(mlp_forward(sel[n_tasks], level["shared_gate"]))
            gates.append(w)
            new.append(_mix(w, [e for es in task_out for e in es] + shared_out))
        sel = new
    nodes: list[np.ndarray] = []

    def value(ref) -> np.ndarray:
        if ref == "x0":
            return x0
        if ref == "bottom":
            return h
        kind, i = ref
        return sel[i] if kind == "level" else nodes[i]

    for node in spec["nodes"]:
        if node["op"] == "mlp":
            nodes.append(mlp_forward(value(node["input"]), node["mlp"]))
            continue
        xs = [value(r) for r in node["inputs"]]
        logits = np.stack([(mlp_forward(x, node["query"]) * mlp_forward(x, node["key"])).sum(axis=1)
                           for x in xs], axis=1) / node["temperature"]
        nodes.append(_mix(_softmax(logits), [mlp_forward(x, node["value"]) for x in xs]))
    towers = []
    for t, tower in enumerate(spec["towers"]):
        if tower["input"] == "node":
            inp = nodes[tower["node"]]
        else:
            inp = {"x0": x0, "bottom": h, "level": sel[t] if spec["levels"] else None}[tower["input"]]
        y = mlp_forward(inp, tower["mlp"])
        towers.append(_sigmoid(y) if tower["activation"] == "sigmoid" else y)
    outs = [towers[o["tower"]] if "tower" in o else towers[o["product"][0]] * towers[o["product"][1]]
            for o in spec["outputs"]]
    gate_arr = np.concatenate(gates, axis=1) if gates else np.zeros((batch, 0))
    return np.concatenate(outs, axis=1), gate_arr
