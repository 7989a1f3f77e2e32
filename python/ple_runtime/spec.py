"""The generic model spec: plain numpy arrays plus a small config.

This is what :func:`ple_runtime.format.write` and :func:`ple_runtime.reference.forward`
take. The exporters (:mod:`ple_runtime.export_torch`, :mod:`ple_runtime.export_keras`) produce
it from live models; a hand-built model can be written by building it directly. It mirrors
``docs/FORMAT.md`` but keeps BatchNorm unfolded and weights in the training
library's layout, so that the float64 reference can follow the libraries' formulas
and the writer does the folding and packing in exactly one place.

Shape of a spec (a plain ``dict``)::

    {
      "name": str,                                   # model name, 1-255 bytes of UTF-8
      "features": [                                  # the inputs, in the order a caller passes them
        {"name": str, "kind": "dense", "width": int},
        {"name": str, "kind": "sparse", "table": tname, "id_f32": bool},
        {"name": str, "kind": "sequence", "table": tname, "max_len": int,
         "pooling": "sum" | "mean" | "max", "pad_id": int | None, "id_f32": bool},
      ],
      "tables": {tname: array [vocab, dim]},         # several features may share one table
      "x0_order": [feature names],                   # optional; default = feature list order
      "bottom": MLP | None,                          # optional shared bottom applied to x0
      "levels": [                                    # 0..16 extraction levels (MMoE: 1 level, S = 0)
        {"task_experts": [[MLP] * S for each task],  # S experts per task (may be 0)
         "shared_experts": [MLP] * SH,
         "task_gates": [MLP] * T,                    # logits over [task t's S experts, SH shared]
         "shared_gate": MLP | None},                 # every level but the last; None on the last
      ],
      "nodes": [                                     # optional graph nodes (format 1.3), each
                                                     # reading x0, the bottom, ["level", t] or an
                                                     # earlier ["node", i]:
        {"op": "mlp", "input": ref, "mlp": MLP},
        {"op": "attention", "inputs": [ref, ...],    # 1..64 inputs of one width D
         "query": MLP, "key": MLP, "value": MLP,     # each reads D; query and key equally wide
         "temperature": float},                      # out = sum_j softmax_j(q_j.k_j / temperature) v_j
      ],
      "towers": [                                    # T >= 1 towers, one per task
        {"mlp": MLP, "input": "x0" | "bottom" | "level" | "node", "activation": "sigmoid" | "identity",
         "node": i},                                 # "node": only with input "node"
      ],
      "outputs": [                                   # packaging of the result row, in order
        {"name": str, "tower": i} | {"name": str, "product": [i, j]},
      ],
    }

An MLP is a non-empty list of layers, ``y = act(bn(x @ W^T + b))``::

    {"weight": array [out, in],          # torch layout; "weight_layout": "in_out" for Keras kernels
     "bias": array [out] | None,
     "bn": {"gamma", "beta", "mean", "var", "eps"} | None,   # eval BatchNorm after the Linear;
                                                            # gamma/beta may be None (not affine)
     "activation": "identity" | "relu" | "sigmoid" | "tanh" | "leaky_relu" | "prelu"
                   | "dice_rechub" | "dice_bn" | "softmax",
     # activation parameters:
     "slope": float,                     # leaky_relu (default 0.01)
     "prelu_weight": array [1] | [out],  # prelu
     "dice_alpha": array [1] (dice_rechub) | [1] or [out] (dice_bn),
     "dice_eps": float,                  # dice_rechub (default 1e-3)
     "dice_bn": {"mean", "var", "eps", "gamma" | None, "beta" | None},   # dice_bn's own BatchNorm
    }

Gate MLPs end in logits (last activation ``identity``): the softmax is part of the
gate (FORMAT.md section 3.7), so an exporter drops the library's softmax module.

:func:`normalize` validates a spec and returns a canonical copy (float64 arrays,
``[out, in]`` weights, defaults filled in) or raises :class:`SpecError` with a path
such as ``levels[1].task_gates[0][2].bias`` naming the offending field. Embedding tables
given as floating-point numpy arrays are the exception: the copy refers to them as they
are (float16, float32 or float64), since a table can be gigabytes; the writer converts
them a slice at a time as it writes the file.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any, Iterator

import numpy as np

from .codes import (
    ACT_CODES, MAX_DENSE_WIDTH, MAX_EXPERTS_PER_LEVEL, MAX_FEATURES, MAX_LAYERS, MAX_LEN, MAX_LEVELS,
    MAX_NODE_INPUTS, MAX_NODES, MAX_OUTPUTS, MAX_STRING_BYTES, MAX_TASKS, MAX_WORKING_FLOATS, NODE_OP_CODES,
    POOL_CODES, TENSOR_DIM_LIMIT, TOWER_ACT_CODES, TOWER_INPUT_CODES,
)

# The spec's names for the file's codes (ple_runtime.codes holds the table).
ACTIVATIONS = tuple(ACT_CODES)
POOLINGS = tuple(POOL_CODES)
TOWER_INPUTS = tuple(TOWER_INPUT_CODES)
TOWER_ACTIVATIONS = tuple(TOWER_ACT_CODES)

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


class SpecError(ValueError):
    """A spec that cannot be written: the message starts with the offending path."""


class ExportError(ValueError):
    """A model (or one of its layers) that the .ple format cannot represent exactly: raised by
    the exporters (:mod:`ple_runtime.export_torch`, :mod:`ple_runtime.export_keras`), naming the
    module or layer, the option, and what to do."""


def check_string(value: Any, where: str) -> str:
    """Apply FORMAT.md's string rule: 1-255 bytes of UTF-8, no NUL or control characters."""
    if not isinstance(value, str):
        raise SpecError(f"{where}: expected a string, got {type(value).__name__}")
    raw = value.encode("utf-8", errors="strict")
    if not 1 <= len(raw) <= MAX_STRING_BYTES:
        raise SpecError(f"{where}: {value!r} must be 1-{MAX_STRING_BYTES} bytes of UTF-8, is {len(raw)}")
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            raise SpecError(f"{where}: {value!r} contains control character U+{ord(ch):04X}")
    return value


def _array(value: Any, where: str, ndim: int, shape: tuple | None = None) -> np.ndarray:
    """Convert to a finite float64 array of the given rank (and shape, where a dim is not None)."""
    if value is None:
        raise SpecError(f"{where}: missing array")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: not a numeric array ({exc})") from None
    if arr.ndim != ndim:
        raise SpecError(f"{where}: expected a {ndim}-D array, got shape {arr.shape}")
    if shape is not None:
        for axis, (got, want) in enumerate(zip(arr.shape, shape)):
            if want is not None and got != want:
                raise SpecError(f"{where}: expected shape {tuple('?' if w is None else w for w in shape)}, got {arr.shape}")
    if arr.size == 0 or min(arr.shape) < 1:
        raise SpecError(f"{where}: empty array of shape {arr.shape}")
    if max(arr.shape) >= TENSOR_DIM_LIMIT:
        raise SpecError(f"{where}: dimension of 2^31 or more in shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise SpecError(f"{where}: contains NaN or infinity")
    return arr.copy()


TABLE_CHECK_BYTES = 8 << 20
"""Tables are checked for NaN and infinity this many bytes at a time (never copied whole)."""


def _table(value: Any, where: str) -> np.ndarray:
    """An embedding table [vocab, dim]. A floating-point numpy array is kept as it is (no
    copy, whatever its float dtype: tables can be GBs, and the writer reads them a slice at a
    time); anything else goes through :func:`_array` (float64)."""
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.dtype.itemsize > 8:
        return _array(value, where, 2)
    if value.ndim != 2:
        raise SpecError(f"{where}: expected a 2-D array, got shape {value.shape}")
    if value.size == 0:
        raise SpecError(f"{where}: empty array of shape {value.shape}")
    if max(value.shape) >= TENSOR_DIM_LIMIT:
        raise SpecError(f"{where}: dimension of 2^31 or more in shape {value.shape}")
    step = max(1, TABLE_CHECK_BYTES // (value.shape[1] * value.itemsize))
    for start in range(0, value.shape[0], step):
        if not np.all(np.isfinite(value[start:start + step])):
            raise SpecError(f"{where}: contains NaN or infinity")
    return value


def _positive_int(value: Any, where: str, limit: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise SpecError(f"{where}: expected an integer, got {value!r}")
    if not 1 <= int(value) <= limit:
        raise SpecError(f"{where}: {int(value)} is outside 1..{limit}")
    return int(value)


def _finite_float(value: Any, where: str, positive: bool = False) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(out) or (positive and out <= 0):
        raise SpecError(f"{where}: {value!r} must be finite{' and positive' if positive else ''}")
    if abs(out) > float(np.finfo(np.float32).max):
        raise SpecError(f"{where}: {value!r} does not fit in f32")
    return out


def _bn(value: Any, where: str, n: int, affine_optional: bool) -> dict:
    """Validate an eval BatchNorm: mean, var (var + eps > 0), eps, gamma/beta (None = 1/0)."""
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a dict with gamma, beta, mean, var, eps")
    unknown = set(value) - {"gamma", "beta", "mean", "var", "eps"}
    if unknown:
        raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
    out = {
        "mean": _array(value.get("mean"), f"{where}.mean", 1, (n,)),
        "var": _array(value.get("var"), f"{where}.var", 1, (n,)),
        "eps": _finite_float(value.get("eps", 1e-5), f"{where}.eps"),
    }
    for key, default in (("gamma", 1.0), ("beta", 0.0)):
        if value.get(key) is None:
            if not affine_optional and key not in value:
                raise SpecError(f"{where}.{key}: missing (use None for a BatchNorm without affine)")
            out[key] = np.full(n, default)
        else:
            out[key] = _array(value[key], f"{where}.{key}", 1, (n,))
    if np.any(out["var"] + out["eps"] <= 0):
        raise SpecError(f"{where}: var + eps must be positive")
    return out


_LAYER_KEYS = {
    "weight", "weight_layout", "bias", "bn", "activation", "slope", "prelu_weight",
    "dice_alpha", "dice_eps", "dice_bn",
}
_ACT_PARAMS = {
    "leaky_relu": {"slope"},
    "prelu": {"prelu_weight"},
    "dice_rechub": {"dice_alpha", "dice_eps"},
    "dice_bn": {"dice_alpha", "dice_bn"},
}


def _layer(value: Any, where: str, k: int) -> dict:
    """Validate one layer reading k inputs and return its canonical form."""
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a layer dict")
    unknown = set(value) - _LAYER_KEYS
    if unknown:
        raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
    layout = value.get("weight_layout", "out_in")
    if layout not in ("out_in", "in_out"):
        raise SpecError(f"{where}.weight_layout: {layout!r} is not 'out_in' or 'in_out'")
    w = _array(value.get("weight"), f"{where}.weight", 2)
    if layout == "in_out":
        w = np.ascontiguousarray(w.T)
    n, got_k = w.shape
    if got_k != k:
        raise SpecError(f"{where}.weight: reads {got_k} inputs but its input is {k} wide "
                        f"(weight shape {w.shape} in [out, in] layout)")
    act = value.get("activation", "identity")
    if act not in ACTIVATIONS:
        raise SpecError(f"{where}.activation: {act!r} is not one of {', '.join(ACTIVATIONS)}")
    stray = ({"slope", "prelu_weight", "dice_alpha", "dice_eps", "dice_bn"} & set(value)) - _ACT_PARAMS.get(act, set())
    stray = {key for key in stray if value[key] is not None}
    if stray:
        raise SpecError(f"{where}: {sorted(stray)} given but activation is {act!r}")
    out = {
        "weight": w,
        "bias": None if value.get("bias") is None else _array(value["bias"], f"{where}.bias", 1, (n,)),
        "bn": None if value.get("bn") is None else _bn(value["bn"], f"{where}.bn", n, affine_optional=True),
        "activation": act,
    }
    if act == "leaky_relu":
        out["slope"] = _finite_float(value.get("slope", 0.01), f"{where}.slope")
    elif act == "prelu":
        a = _array(value.get("prelu_weight"), f"{where}.prelu_weight", 1)
        if a.shape[0] not in (1, n):
            raise SpecError(f"{where}.prelu_weight: expected shape (1,) or ({n},), got {a.shape}")
        out["prelu_weight"] = a
    elif act == "dice_rechub":
        out["dice_alpha"] = _array(value.get("dice_alpha"), f"{where}.dice_alpha", 1, (1,))
        out["dice_eps"] = _finite_float(value.get("dice_eps", 1e-3), f"{where}.dice_eps")
    elif act == "dice_bn":
        a = _array(value.get("dice_alpha"), f"{where}.dice_alpha", 1)
        if a.shape[0] not in (1, n):
            raise SpecError(f"{where}.dice_alpha: expected shape (1,) or ({n},), got {a.shape}")
        out["dice_alpha"] = np.broadcast_to(a, (n,)).copy()
        out["dice_bn"] = _bn(value.get("dice_bn"), f"{where}.dice_bn", n, affine_optional=True)
    return out


def _mlp(value: Any, where: str, k: int) -> list[dict]:
    """Validate an MLP reading k inputs; layer i+1 reads layer i's outputs."""
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{where}: expected a list of layers")
    if not 1 <= len(value) <= MAX_LAYERS:
        raise SpecError(f"{where}: has {len(value)} layers, expected 1..{MAX_LAYERS}")
    layers = []
    for i, layer in enumerate(value):
        layers.append(_layer(layer, f"{where}[{i}]", k))
        k = layers[-1]["weight"].shape[0]
    return layers


def mlp_width(mlp: list[dict]) -> int:
    """Output width of a canonical MLP."""
    return mlp[-1]["weight"].shape[0]


def feature_width(spec: dict, feature: dict) -> int:
    """Floats a feature contributes to x0 (dense width or its table's dim)."""
    if feature["kind"] == "dense":
        return feature["width"]
    return spec["tables"][feature["table"]].shape[1]


def _feature(value: Any, where: str, tables: dict) -> dict:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a feature dict")
    name = check_string(value.get("name"), f"{where}.name")
    kind = value.get("kind")
    allowed = {
        "dense": {"name", "kind", "width"},
        "sparse": {"name", "kind", "table", "id_f32", "vectors"},
        "sequence": {"name", "kind", "table", "max_len", "pooling", "pad_id", "id_f32", "vectors"},
    }
    if kind not in allowed:
        raise SpecError(f"{where}.kind: {kind!r} is not 'dense', 'sparse' or 'sequence'")
    unknown = set(value) - allowed[kind]
    if unknown:
        raise SpecError(f"{where} ({name}): unknown keys {sorted(unknown)} for a {kind} feature")
    if kind == "dense":
        return {"name": name, "kind": kind, "width": _positive_int(value.get("width"), f"{where}.width", MAX_DENSE_WIDTH)}
    table = value.get("table")
    if table not in tables:
        raise SpecError(f"{where} ({name}).table: {table!r} is not in spec['tables']")
    id_f32 = value.get("id_f32", False)
    if not isinstance(id_f32, (bool, np.bool_)):
        raise SpecError(f"{where}.id_f32: expected a bool")
    vectors = value.get("vectors", False)
    if not isinstance(vectors, (bool, np.bool_)):
        raise SpecError(f"{where}.vectors: expected a bool")
    out = {"name": name, "kind": kind, "table": table, "id_f32": bool(id_f32)}
    if vectors:
        # The file omits the table; the caller passes each id's vector (the table stays in the
        # spec: it gives the width, and the check below).
        out["vectors"] = True
    if kind == "sequence":
        out["max_len"] = _positive_int(value.get("max_len"), f"{where}.max_len", MAX_LEN)
        pooling = value.get("pooling", "mean")
        if pooling not in POOLINGS:
            raise SpecError(f"{where}.pooling: {pooling!r} is not one of {POOLINGS}")
        out["pooling"] = pooling
        pad = value.get("pad_id")
        if pad is not None:
            if isinstance(pad, (bool, np.bool_)) or not isinstance(pad, (int, np.integer)) or not I64_MIN <= int(pad) <= I64_MAX:
                raise SpecError(f"{where}.pad_id: expected an i64 or None, got {pad!r}")
            pad = int(pad)
        out["pad_id"] = pad
        if vectors and pooling == "max" and pad is not None:
            # Without the table, max pooling's padding term E[pad] - 1e9 is taken as -1e9: the
            # same f32 value only while |E[pad]| < 32 (FORMAT.md 3.4).
            arr = tables[table]
            row = np.asarray(arr[pad], dtype=np.float64) if 0 <= pad < arr.shape[0] else np.zeros(1)
            if not np.all(np.abs(row) < 32):
                raise SpecError(f"{where} ({name}).vectors: max pooling with pad id {pad} needs the table in the "
                                f"file, since |E[pad]| >= 32 (its padding term E[pad] - 1e9 is not -1e9 in f32)")
    return out


def normalize(spec: dict) -> dict:
    """Validate a spec and return its canonical copy (see the module docstring)."""
    if not isinstance(spec, dict):
        raise SpecError("spec: expected a dict")
    unknown = set(spec) - {"name", "features", "tables", "x0_order", "bottom", "levels", "nodes", "towers", "outputs"}
    if unknown:
        raise SpecError(f"spec: unknown keys {sorted(unknown)}")
    out: dict = {"name": check_string(spec.get("name"), "name")}

    raw_tables = spec.get("tables", {}) or {}
    if not isinstance(raw_tables, dict):
        raise SpecError("tables: expected a dict {name: array [vocab, dim]}")
    out["tables"] = {}
    for tname, arr in raw_tables.items():
        check_string(tname, f"tables[{tname!r}] name")
        check_string("table." + tname, f"tables[{tname!r}] tensor name")
        out["tables"][tname] = _table(arr, f"tables[{tname!r}]")

    feats = spec.get("features")
    if not isinstance(feats, (list, tuple)) or not 1 <= len(feats) <= MAX_FEATURES:
        raise SpecError(f"features: expected a list of 1..{MAX_FEATURES} features")
    out["features"] = [_feature(f, f"features[{i}]", out["tables"]) for i, f in enumerate(feats)]
    names = [f["name"] for f in out["features"]]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"features: duplicate names {dup}")
    used = {f["table"] for f in out["features"] if f["kind"] != "dense"}
    for tname in out["tables"]:
        if tname not in used:
            raise SpecError(f"tables[{tname!r}]: not used by any feature")

    order = spec.get("x0_order")
    if order is None:
        order = names
    if not isinstance(order, (list, tuple)) or sorted(order) != sorted(names):
        raise SpecError(f"x0_order: {order!r} is not a permutation of the feature names {names}")
    out["x0_order"] = list(order)
    width = sum(feature_width(out, f) for f in out["features"])

    towers = spec.get("towers")
    if not isinstance(towers, (list, tuple)) or not 1 <= len(towers) <= MAX_TASKS:
        raise SpecError(f"towers: expected a list of 1..{MAX_TASKS} towers")
    n_tasks = len(towers)

    h = width
    out["bottom"] = None
    if spec.get("bottom") is not None:
        out["bottom"] = _mlp(spec["bottom"], "bottom", width)
        h = mlp_width(out["bottom"])

    levels = spec.get("levels", []) or []
    if not isinstance(levels, (list, tuple)) or len(levels) > MAX_LEVELS:
        raise SpecError(f"levels: expected a list of 0..{MAX_LEVELS} levels")
    out["levels"] = []
    k = h
    for li, level in enumerate(levels):
        out["levels"].append(_level(level, f"levels[{li}]", k, n_tasks, last=li == len(levels) - 1))
        k = out["levels"][-1]["width"]

    values = _Values(width, h if out["bottom"] is not None else None, k if out["levels"] else None, n_tasks)
    nodes = spec.get("nodes", []) or []
    if not isinstance(nodes, (list, tuple)) or len(nodes) > MAX_NODES:
        raise SpecError(f"nodes: expected a list of 0..{MAX_NODES} nodes")
    out["nodes"] = [_node(node, f"nodes[{i}]", values) for i, node in enumerate(nodes)]

    out["towers"] = []
    for ti, tower in enumerate(towers):
        where = f"towers[{ti}]"
        if not isinstance(tower, dict):
            raise SpecError(f"{where}: expected a dict with mlp, input, activation")
        unknown = set(tower) - {"mlp", "input", "activation", "node"}
        if unknown:
            raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
        inp = tower.get("input", "level" if out["levels"] else "bottom" if out["bottom"] else "x0")
        if inp not in TOWER_INPUTS:
            raise SpecError(f"{where}.input: {inp!r} is not one of {TOWER_INPUTS}")
        if (inp == "node") != ("node" in tower):
            raise SpecError(f"{where}: 'node' (the node index) goes with input 'node' and only with it")
        if inp == "level" and not out["levels"]:
            raise SpecError(f"{where}.input: 'level' needs at least one level")
        if inp == "bottom" and out["bottom"] is None:
            raise SpecError(f"{where}.input: 'bottom' needs a bottom MLP")
        act = tower.get("activation", "sigmoid")
        if act not in TOWER_ACTIVATIONS:
            raise SpecError(f"{where}.activation: {act!r} is not 'sigmoid' or 'identity'")
        if inp == "node":
            ref, k_in = values.resolve(["node", tower["node"]], f"{where}.node")
        else:
            k_in = {"x0": width, "bottom": h, "level": k}[inp]
        tw = {"mlp": _mlp(tower.get("mlp"), f"{where}.mlp", k_in), "input": inp, "activation": act}
        if inp == "node":
            tw["node"] = ref[1]
        out["towers"].append(tw)
    unread = [i for i, r in enumerate(values.read) if not r]
    if unread:
        raise SpecError(f"nodes[{unread[0]}]: not read by a later node or a tower")

    outputs = spec.get("outputs")
    if outputs is None:
        outputs = [{"name": f"task{t}", "tower": t} for t in range(n_tasks)]
    if not isinstance(outputs, (list, tuple)) or not 1 <= len(outputs) <= MAX_OUTPUTS:
        raise SpecError(f"outputs: expected a list of 1..{MAX_OUTPUTS} outputs")
    out["outputs"] = []
    for oi, o in enumerate(outputs):
        out["outputs"].append(_output(o, f"outputs[{oi}]", out["towers"]))
    onames = [o["name"] for o in out["outputs"]]
    dup = sorted({n for n in onames if onames.count(n) > 1})
    if dup:
        raise SpecError(f"outputs: duplicate names {dup}")

    work = working_floats(out)
    if work > MAX_WORKING_FLOATS:
        raise SpecError(f"spec: per-sample working size {work} floats is over the cap {MAX_WORKING_FLOATS}")
    return out


def _level(level: Any, where: str, k: int, n_tasks: int, last: bool) -> dict:
    if not isinstance(level, dict):
        raise SpecError(f"{where}: expected a level dict")
    unknown = set(level) - {"task_experts", "shared_experts", "task_gates", "shared_gate"}
    if unknown:
        raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
    task_experts = level.get("task_experts")
    if task_experts is None:
        task_experts = [[] for _ in range(n_tasks)]
    if not isinstance(task_experts, (list, tuple)) or len(task_experts) != n_tasks:
        raise SpecError(f"{where}.task_experts: expected one list of experts per task ({n_tasks})")
    sizes = {len(e) for e in task_experts}
    if len(sizes) != 1:
        raise SpecError(f"{where}.task_experts: every task needs the same number of experts, got {[len(e) for e in task_experts]}")
    n_spec = sizes.pop()
    shared = level.get("shared_experts", []) or []
    n_shared = len(shared)
    if n_tasks * n_spec + n_shared > MAX_EXPERTS_PER_LEVEL:
        raise SpecError(f"{where}: {n_tasks * n_spec + n_shared} experts, over {MAX_EXPERTS_PER_LEVEL}")
    if n_spec + n_shared < 1:
        raise SpecError(f"{where}: a task gate needs at least one expert (S + SH >= 1)")
    out = {
        "task_experts": [[_mlp(e, f"{where}.task_experts[{t}][{s}]", k) for s, e in enumerate(es)]
                         for t, es in enumerate(task_experts)],
        "shared_experts": [_mlp(e, f"{where}.shared_experts[{j}]", k) for j, e in enumerate(shared)],
    }
    widths = {mlp_width(e) for es in out["task_experts"] for e in es} | {mlp_width(e) for e in out["shared_experts"]}
    if len(widths) != 1:
        raise SpecError(f"{where}: all experts of a level must have the same output width, got {sorted(widths)}")
    out["width"] = widths.pop()

    gates = level.get("task_gates")
    if not isinstance(gates, (list, tuple)) or len(gates) != n_tasks:
        raise SpecError(f"{where}.task_gates: expected one gate per task ({n_tasks})")
    out["task_gates"] = [_gate(g, f"{where}.task_gates[{t}]", k, n_spec + n_shared) for t, g in enumerate(gates)]
    sg = level.get("shared_gate")
    if last and sg is not None:
        raise SpecError(f"{where}.shared_gate: the last level has no shared gate "
                        "(its output is never used; exporters drop it)")
    if not last and sg is None:
        raise SpecError(f"{where}.shared_gate: missing; every level but the last needs one")
    out["shared_gate"] = None if sg is None else _gate(sg, f"{where}.shared_gate", k, n_tasks * n_spec + n_shared)
    return out


class _Values:
    """The values a node or tower may read, with their widths, and which nodes were read."""

    def __init__(self, x0: int, bottom: int | None, level: int | None, n_tasks: int):
        self.x0, self.bottom, self.level, self.n_tasks = x0, bottom, level, n_tasks
        self.nodes: list[int] = []
        self.read: list[bool] = []

    def resolve(self, ref: Any, where: str) -> tuple[Any, int]:
        """A canonical reference ("x0", "bottom", ["level", t], ["node", i]) and its width."""
        if ref == "x0":
            return "x0", self.x0
        if ref == "bottom":
            if self.bottom is None:
                raise SpecError(f"{where}: reads the bottom, but there is none")
            return "bottom", self.bottom
        if isinstance(ref, (list, tuple)) and len(ref) == 2 and ref[0] in ("level", "node"):
            i = ref[1]
            if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
                raise SpecError(f"{where}: index {i!r} is not an integer")
            i = int(i)
            if ref[0] == "level":
                if self.level is None:
                    raise SpecError(f"{where}: reads a level output, but there are no levels")
                if not 0 <= i < self.n_tasks:
                    raise SpecError(f"{where}: task {i} is outside 0..{self.n_tasks - 1}")
                return ["level", i], self.level
            if not 0 <= i < len(self.nodes):
                raise SpecError(f"{where}: node {i} does not come before it (a node reads earlier nodes only)")
            self.read[i] = True
            return ["node", i], self.nodes[i]
        raise SpecError(f"{where}: {ref!r} is not 'x0', 'bottom', ['level', t] or ['node', i]")


def _node(value: Any, where: str, values: _Values) -> dict:
    """Validate graph node `where` (FORMAT.md section 3.10) and register its width."""
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a node dict")
    op = value.get("op")
    if op not in NODE_OP_CODES:
        raise SpecError(f"{where}.op: {op!r} is not one of {tuple(NODE_OP_CODES)}")
    keys = {"mlp": {"op", "input", "mlp"}, "attention": {"op", "inputs", "query", "key", "value", "temperature"}}[op]
    unknown = set(value) - keys
    if unknown:
        raise SpecError(f"{where}: unknown keys {sorted(unknown)} for a {op} node")
    if op == "mlp":
        ref, k = values.resolve(value.get("input"), f"{where}.input")
        out = {"op": op, "input": ref, "mlp": _mlp(value.get("mlp"), f"{where}.mlp", k)}
        width = mlp_width(out["mlp"])
    else:
        refs = value.get("inputs")
        if not isinstance(refs, (list, tuple)) or not 1 <= len(refs) <= MAX_NODE_INPUTS:
            raise SpecError(f"{where}.inputs: expected a list of 1..{MAX_NODE_INPUTS} references")
        resolved = [values.resolve(r, f"{where}.inputs[{j}]") for j, r in enumerate(refs)]
        widths = {w for _, w in resolved}
        if len(widths) != 1:
            raise SpecError(f"{where}.inputs: every input must have the same width, got {[w for _, w in resolved]}")
        k = widths.pop()
        out = {"op": op, "inputs": [r for r, _ in resolved],
               "query": _mlp(value.get("query"), f"{where}.query", k),
               "key": _mlp(value.get("key"), f"{where}.key", k),
               "value": _mlp(value.get("value"), f"{where}.value", k),
               "temperature": _finite_float(value.get("temperature"), f"{where}.temperature", positive=True)}
        if mlp_width(out["query"]) != mlp_width(out["key"]):
            raise SpecError(f"{where}: query width {mlp_width(out['query'])} and key width "
                            f"{mlp_width(out['key'])} differ")
        width = mlp_width(out["value"])
    values.nodes.append(width)
    values.read.append(False)
    return out


def node_mlps(node: dict) -> list[tuple[str, list[dict]]]:
    """(role suffix, MLP) of a canonical node, in file order."""
    if node["op"] == "mlp":
        return [("", node["mlp"])]
    return [(".query", node["query"]), (".key", node["key"]), (".value", node["value"])]


def _gate(value: Any, where: str, k: int, width: int) -> list[dict]:
    mlp = _mlp(value, where, k)
    if mlp_width(mlp) != width:
        raise SpecError(f"{where}: produces {mlp_width(mlp)} logits, expected {width} (one per expert it mixes)")
    if mlp[-1]["activation"] != "identity":
        raise SpecError(f"{where}: the last layer must output logits (activation identity, not "
                        f"{mlp[-1]['activation']!r}); the gate's softmax is implicit")
    return mlp


def _output(value: Any, where: str, towers: list) -> dict:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a dict")
    name = check_string(value.get("name"), f"{where}.name")
    has_t, has_p = "tower" in value, "product" in value
    if has_t == has_p or set(value) - {"name", "tower", "product"}:
        raise SpecError(f"{where}: expected exactly {{'name', 'tower'}} or {{'name', 'product'}}")

    def tower_index(i: Any, w: str) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)) or not 0 <= int(i) < len(towers):
            raise SpecError(f"{w}: {i!r} is not a tower index in 0..{len(towers) - 1}")
        return int(i)

    if has_t:
        return {"name": name, "tower": tower_index(value["tower"], f"{where}.tower")}
    pair = value["product"]
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise SpecError(f"{where}.product: expected [tower a, tower b]")
    a, b = (tower_index(i, f"{where}.product") for i in pair)
    if mlp_width(towers[a]["mlp"]) != mlp_width(towers[b]["mlp"]):
        raise SpecError(f"{where}.product: towers {a} and {b} have different widths")
    return {"name": name, "product": [a, b]}


def iter_mlps(spec: dict) -> Iterator[tuple[str, list[dict]]]:
    """Yield (role, mlp) in file order: bottom, then per level the task experts
    (task-major), shared experts, task gates and shared gate, then the nodes' MLPs
    (``node<i>``, or ``node<i>.query`` / ``.key`` / ``.value``), then the towers."""
    if spec.get("bottom") is not None:
        yield "bottom", spec["bottom"]
    for li, level in enumerate(spec.get("levels", [])):
        for t, experts in enumerate(level["task_experts"]):
            for s, e in enumerate(experts):
                yield f"l{li}.task{t}.expert{s}", e
        for j, e in enumerate(level["shared_experts"]):
            yield f"l{li}.shared.expert{j}", e
        for t, g in enumerate(level["task_gates"]):
            yield f"l{li}.task{t}.gate", g
        if level["shared_gate"] is not None:
            yield f"l{li}.shared.gate", level["shared_gate"]
    for i, node in enumerate(spec.get("nodes", [])):
        for suffix, mlp in node_mlps(node):
            yield f"node{i}{suffix}", mlp
    for t, tower in enumerate(spec["towers"]):
        yield f"tower{t}", tower["mlp"]


def working_floats(spec: dict) -> int:
    """Floats of working memory a runtime needs per sample (FORMAT.md section 3.8): x0, every
    layer's output, one expert width per gate mixture, every product output; an attention
    node's MLPs once per input, its logits and its mixture."""
    layers = sum(layer["weight"].shape[0] for _, mlp in iter_mlps(spec) for layer in mlp)
    for node in spec.get("nodes", []):
        if node["op"] == "attention":
            n = len(node["inputs"])
            per_input = sum(layer["weight"].shape[0] for _, mlp in node_mlps(node) for layer in mlp)
            layers += (n - 1) * per_input + n + mlp_width(node["value"])
    mixtures = sum(level["width"] * (len(level["task_gates"]) + (level["shared_gate"] is not None))
                   for level in spec["levels"])
    products = sum(mlp_width(spec["towers"][o["product"][0]]["mlp"]) for o in spec["outputs"] if "product" in o)
    return x0_width(spec) + layers + mixtures + products


def x0_width(spec: dict) -> int:
    """Width of the concatenated input vector of a canonical spec."""
    return sum(feature_width(spec, f) for f in spec["features"])


def output_width(spec: dict) -> int:
    """Width of one output row of a canonical spec (FORMAT.md section 5)."""
    return sum(mlp_width(spec["towers"][o["tower"] if "tower" in o else o["product"][0]]["mlp"]) for o in spec["outputs"])


def gate_width(spec: dict) -> int:
    """Width of one gate-weight row of a canonical spec (FORMAT.md section 5)."""
    total = 0
    n_tasks = len(spec["towers"])
    for level in spec["levels"]:
        s, sh = len(level["task_experts"][0]), len(level["shared_experts"])
        total += n_tasks * (s + sh)
        if level["shared_gate"] is not None:
            total += n_tasks * s + sh
    return total
