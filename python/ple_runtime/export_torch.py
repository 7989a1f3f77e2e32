"""Specs from live torch-rechub 0.9.0 and DeepCTR-Torch 0.3.0 multi-task models.

:func:`to_spec` reads a model's modules (not just its state_dict: activations,
task types, pooling and the input order are not in the weights) and returns a
:mod:`ple_runtime.spec` dict with the eval-mode semantics docs/SEMANTICS.md
records:

- torch-rechub: ``PLE`` (``CGC`` = one level; the old <= 0.4.0 tower without a final
  Linear is just a tower whose MLP ends in a hidden layer), ``MMOE``, ``SharedBottom``,
  ``ESMM``, ``AITM`` (graph nodes: per-task bottoms, information MLPs, attention; format
  1.3); x0 = sparse/sequence embeddings in list order, then dense values;
  outputs ``task0..`` (or ``task_names``), ESMM ``[cvr, ctr, ctcvr]``.
- DeepCTR-Torch: ``PLE`` (SH read from the gate width, not from the stored shared
  experts; the last level's unused shared gate dropped; the gate DNN and the bias-free
  gate Linear form one gate MLP), ``MMOE``, ``SharedBottom``, ``ESMM`` (one shared
  PredictionLayer bias for both towers); PredictionLayer biases are added into the
  tower's last bias; ids pass through f32; x0 = SparseFeat, VarLenSparseFeat, DenseFeat.

Anything the file cannot represent exactly is refused with :class:`ExportError`
naming the module (an unknown activation, ``concat`` pooling, ``length_name``
sequences, a BatchNorm without running statistics, an embedding with ``max_norm``...).
Dropout is accepted: it is the identity in eval mode.

:func:`run_model` scores the same inputs with the real model (building DeepCTR's
``[B, C]`` float input in its column order) and :func:`run_gates` captures its gate
weights, so fixtures can compare the library with :mod:`ple_runtime.reference`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

import numpy as np
import torch
from torch import nn

from . import format as fmt
from .spec import ExportError

__all__ = ["ExportError", "to_spec", "export", "torch_inputs", "run_model", "run_gates", "import_deepctr_offline"]


def import_deepctr_offline() -> None:
    """Import deepctr_torch (if installed) without its import-time PyPI version check: it asks
    PyPI for a newer release, which must not need the network."""
    if "deepctr_torch" in sys.modules or importlib.util.find_spec("deepctr_torch") is None:
        return
    try:
        import requests
    except ImportError:
        return
    real_get = requests.get

    class _Offline:
        status_code, text = 599, "{}"

    requests.get = lambda *a, **k: _Offline()
    try:
        import deepctr_torch  # noqa: F401
    finally:
        requests.get = real_get


def _np(t: torch.Tensor) -> np.ndarray:
    """A parameter or buffer as float64 (exact for f32 tensors)."""
    return t.detach().cpu().to(torch.float64).numpy().copy()


def _table(t: torch.Tensor) -> np.ndarray:
    """An embedding table as numpy without copying it (a float32 CPU table is shared with the
    model: tables can be gigabytes, and the writer reads them a slice at a time). Other dtypes
    and devices are converted to float32 (exact from float16 and bfloat16)."""
    t = t.detach()
    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64, torch.float16):
        t = t.to("cpu", torch.float32)
    return t.numpy()


def _is(obj: Any, module: str, name: str) -> bool:
    """Exact class check by module and name, so neither library must be importable."""
    cls = type(obj)
    return cls.__name__ == name and cls.__module__ == module


def unwrap(model: Any) -> Any:
    """The model inside ``nn.DataParallel`` / ``DistributedDataParallel`` (``.module``) and
    ``torch.compile`` (``._orig_mod``) wrappers, which hold the same parameters."""
    for _ in range(8):  # wrappers may nest (a compiled DataParallel)
        cls = type(model)
        if cls.__name__ in ("DataParallel", "DistributedDataParallel") and cls.__module__.startswith("torch.nn"):
            model = model.module
        elif cls.__name__ == "OptimizedModule" and cls.__module__.startswith("torch._dynamo"):
            model = model._orig_mod
        else:
            break
    return model


def _library(model: nn.Module) -> str:
    mod = type(model).__module__
    if mod.startswith("torch_rechub."):
        return "torch_rechub"
    if mod.startswith("deepctr_torch."):
        return "deepctr_torch"
    raise ExportError(f"{type(model).__module__}.{type(model).__name__} is not a torch-rechub or DeepCTR-Torch model")


# --------------------------------------------------------------------------- layers


def _bn(m: nn.Module, where: str) -> dict:
    if type(m) is not nn.BatchNorm1d:
        raise ExportError(f"{where}: {type(m).__name__} is not nn.BatchNorm1d")
    if not m.track_running_stats or m.running_mean is None:
        raise ExportError(f"{where}: BatchNorm1d without running statistics uses batch statistics in eval mode")
    return {
        "gamma": _np(m.weight) if m.affine else None,
        "beta": _np(m.bias) if m.affine else None,
        "mean": _np(m.running_mean),
        "var": _np(m.running_var),
        "eps": float(m.eps),
    }


def _activation(m: nn.Module, where: str) -> dict:
    """Map an activation module onto a spec activation (with its parameters)."""
    t = type(m)
    if t is nn.ReLU:
        return {"activation": "relu"}
    if t is nn.Sigmoid:
        return {"activation": "sigmoid"}
    if t is nn.Tanh:
        return {"activation": "tanh"}
    if t is nn.Identity or _is(m, "deepctr_torch.layers.activation", "Identity"):
        return {"activation": "identity"}
    if t is nn.LeakyReLU:
        return {"activation": "leaky_relu", "slope": float(m.negative_slope)}
    if t is nn.PReLU:
        return {"activation": "prelu", "prelu_weight": _np(m.weight)}
    if t is nn.Softmax:
        if m.dim not in (1, -1):
            raise ExportError(f"{where}: Softmax over dim {m.dim} (only the feature axis, dim=1, is supported)")
        return {"activation": "softmax"}
    if _is(m, "torch_rechub.basic.activation", "Dice"):
        return {"activation": "dice_rechub", "dice_alpha": _np(m.alpha).reshape(-1), "dice_eps": float(m.epsilon)}
    if _is(m, "deepctr_torch.layers.activation", "Dice"):
        if m.dim != 2:
            raise ExportError(f"{where}: DeepCTR-Torch Dice with dim={m.dim} (only dim=2 works on 2-D inputs)")
        return {"activation": "dice_bn", "dice_alpha": _np(m.alpha).reshape(-1), "dice_bn": _bn(m.bn, f"{where}.bn")}
    raise ExportError(f"{where}: activation {t.__module__}.{t.__name__} is not supported "
                      "(supported: ReLU, Sigmoid, Tanh, Identity, LeakyReLU, PReLU, Softmax, Dice)")


def _is_dropout(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.dropout._DropoutNd)


def _linear(m: nn.Module, where: str) -> dict:
    if type(m) is not nn.Linear:
        raise ExportError(f"{where}: {type(m).__name__} is not nn.Linear")
    return {"weight": _np(m.weight), "bias": None if m.bias is None else _np(m.bias), "bn": None,
            "activation": "identity"}


def _rechub_mlp(mlp: nn.Module, where: str) -> list[dict]:
    """torch-rechub MLP: an nn.Sequential of (Linear, BatchNorm1d, activation, Dropout)* [Linear]."""
    seq = getattr(mlp, "mlp", None)
    if not isinstance(seq, nn.Sequential):
        raise ExportError(f"{where}: expected a torch-rechub MLP with an nn.Sequential .mlp")
    layers: list[dict] = []
    stage = None  # what the current layer has seen: "linear", "bn", "act"
    for i, m in enumerate(seq):
        path = f"{where}.mlp.{i}"
        if _is_dropout(m):
            continue
        if type(m) is nn.Linear:
            layers.append(_linear(m, path))
            stage = "linear"
        elif type(m) is nn.BatchNorm1d:
            if stage != "linear":
                raise ExportError(f"{path}: BatchNorm1d must directly follow a Linear")
            layers[-1]["bn"] = _bn(m, path)
            stage = "bn"
        else:
            if stage not in ("linear", "bn"):
                raise ExportError(f"{path}: activation {type(m).__name__} does not follow a Linear")
            layers[-1].update(_activation(m, path))
            stage = "act"
    return layers


def _deepctr_dnn(dnn: nn.Module, where: str) -> list[dict]:
    """DeepCTR-Torch DNN: per layer linears[i], bn[i] (use_bn), activation_layers[i]; dropout."""
    if not _is(dnn, "deepctr_torch.layers.core", "DNN"):
        raise ExportError(f"{where}: {type(dnn).__name__} is not a DeepCTR-Torch DNN")
    layers = []
    for i, lin in enumerate(dnn.linears):
        layer = _linear(lin, f"{where}.linears.{i}")
        if dnn.use_bn:
            layer["bn"] = _bn(dnn.bn[i], f"{where}.bn.{i}")
        layer.update(_activation(dnn.activation_layers[i], f"{where}.activation_layers.{i}"))
        layers.append(layer)
    return layers


def _as_gate(layers: list[dict], where: str) -> list[dict]:
    """A torch-rechub gate MLP ends in Softmax: the file's gate softmax is implicit."""
    if not layers or layers[-1]["activation"] != "softmax":
        raise ExportError(f"{where}: a gate must end in Softmax")
    layers[-1]["activation"] = "identity"
    return layers


def _identity_layer(width: int) -> list[dict]:
    """An exact pass-through (W = I, no bias) for a tower MLP with no layers at all."""
    return [{"weight": np.eye(width), "bias": None, "bn": None, "activation": "identity"}]


# --------------------------------------------------------------------------- torch-rechub


# The bound on a torch-rechub sequence with a padding_idx when export() is not given max_len: 256
# holds the behaviour histories of common recommenders (tens to a couple of hundred ids) with room
# to spare; a longer sequence is refused at scoring (docs/EXPORT.md). Callers sending ragged
# sequences pay nothing for a larger bound; padded callers send batch x max_len ids.
DEFAULT_MAX_LEN = 256


def _rechub_features(model: nn.Module, features: list, max_len, one_dim: bool = True) -> dict:
    """features, tables and x0 order of a torch-rechub model (sparse/sequence first, dense last)."""
    from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature

    embed = model.embedding.embed_dict
    out_feats, tables, emb_order, dense_order = [], {}, [], []
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise ExportError(f"features: duplicate feature names in {names}")
    for fea in features:
        where = f"feature {fea.name!r}"
        if isinstance(fea, DenseFeature):
            out_feats.append({"name": fea.name, "kind": "dense", "width": int(fea.embed_dim)})
            dense_order.append(fea.name)
            continue
        if not isinstance(fea, (SparseFeature, SequenceFeature)):
            raise ExportError(f"{where}: unsupported feature type {type(fea).__name__}")
        owner = fea.shared_with or fea.name
        if owner not in embed:
            raise ExportError(f"{where}: no embedding table {owner!r} in model.embedding.embed_dict")
        emb = embed[owner]
        if type(emb) is not nn.Embedding or emb.max_norm is not None:
            raise ExportError(f"embedding.embed_dict.{owner}: only plain nn.Embedding without max_norm is supported")
        tables[owner] = _table(emb.weight)
        if isinstance(fea, SparseFeature):
            out_feats.append({"name": fea.name, "kind": "sparse", "table": owner, "id_f32": False})
        else:
            if fea.pooling not in ("sum", "mean"):
                raise ExportError(f"{where}: pooling {fea.pooling!r} is not supported (torch-rechub's multi-task "
                                  "models can only use sum or mean)")
            length = max_len.get(fea.name) if isinstance(max_len, dict) else max_len
            if length is None and fea.padding_idx is not None:
                length = DEFAULT_MAX_LEN  # only a bound: padding is masked, so L changes no score
            if length is None:
                raise ExportError(f"{where}: torch-rechub sequences have no fixed length, and without padding_idx "
                                  f"every position counts in the pooling, so the padded length changes the "
                                  f"scores; pass max_len={{{fea.name!r}: L}} (the padded length used in training)")
            out_feats.append({"name": fea.name, "kind": "sequence", "table": owner, "max_len": int(length),
                              "pooling": fea.pooling, "pad_id": fea.padding_idx, "id_f32": False})
        emb_order.append(fea.name)
    dims = {tables[f["table"]].shape[1] for f in out_feats if f["kind"] != "dense"}
    if one_dim and len(dims) > 1:
        raise ExportError(f"features: torch-rechub stacks embeddings along a field axis, so all sparse/sequence "
                          f"features need one embed_dim; got {sorted(dims)}")
    return {"features": out_feats, "tables": tables, "x0_order": emb_order + dense_order}


def _task_act(task_type: str, where: str) -> str:
    if task_type in ("classification", "binary"):
        return "sigmoid"
    if task_type == "regression":
        return "identity"
    raise ExportError(f"{where}: task type {task_type!r} is not classification/binary or regression")


def _rechub_towers(model: nn.Module, width: int, inp: str) -> list[dict]:
    towers = []
    for t, (tower, pred) in enumerate(zip(model.towers, model.predict_layers)):
        layers = _rechub_mlp(tower, f"towers.{t}") or _identity_layer(width)
        towers.append({"mlp": layers, "input": inp, "activation": _task_act(pred.task_type, f"predict_layers.{t}")})
    return towers


def _rechub_spec(model: nn.Module, kind: str, max_len) -> dict:
    if kind == "ESMM":
        from torch_rechub.basic.features import DenseFeature
        for fea in model.user_features + model.item_features:
            if isinstance(fea, DenseFeature):
                raise ExportError(f"feature {fea.name!r}: torch-rechub ESMM drops dense features (squeeze_dim=False)")
        base = _rechub_features(model, model.user_features + model.item_features, max_len, one_dim=False)
        for group, feats in (("user_features", model.user_features), ("item_features", model.item_features)):
            dims = {base["tables"][fea.shared_with or fea.name].shape[1] for fea in feats}
            if len(dims) > 1:
                raise ExportError(f"{group}: torch-rechub ESMM needs one embed_dim per group, got {sorted(dims)}")
        towers = [{"mlp": _rechub_mlp(model.tower_cvr, "tower_cvr"), "input": "x0", "activation": "sigmoid"},
                  {"mlp": _rechub_mlp(model.tower_ctr, "tower_ctr"), "input": "x0", "activation": "sigmoid"}]
        return {**base, "levels": [], "towers": towers,
                "outputs": [{"name": "cvr", "tower": 0}, {"name": "ctr", "tower": 1},
                            {"name": "ctcvr", "product": [1, 0]}]}

    base = _rechub_features(model, model.features, max_len)
    if kind == "AITM":
        return {**base, **_rechub_aitm(model)}
    if kind == "SharedBottom":
        bottom = _rechub_mlp(model.bottom_mlp, "bottom_mlp")
        return {**base, "bottom": bottom, "levels": [],
                "towers": _rechub_towers(model, bottom[-1]["weight"].shape[0], "bottom")}
    if kind == "MMOE":
        experts = [_rechub_mlp(e, f"experts.{i}") for i, e in enumerate(model.experts)]
        gates = [_as_gate(_rechub_mlp(g, f"gates.{t}"), f"gates.{t}") for t, g in enumerate(model.gates)]
        level = {"task_experts": [[] for _ in gates], "shared_experts": experts, "task_gates": gates,
                 "shared_gate": None}
        return {**base, "levels": [level],
                "towers": _rechub_towers(model, experts[0][-1]["weight"].shape[0], "level")}
    # PLE (CGC = one level)
    levels = []
    for li, cgc in enumerate(model.cgc_layers):
        p = f"cgc_layers.{li}"
        S, T = cgc.n_expert_specific, cgc.n_task
        spec_experts = [_rechub_mlp(e, f"{p}.experts_specific.{i}") for i, e in enumerate(cgc.experts_specific)]
        level = {
            "task_experts": [spec_experts[t * S:(t + 1) * S] for t in range(T)],
            "shared_experts": [_rechub_mlp(e, f"{p}.experts_shared.{j}") for j, e in enumerate(cgc.experts_shared)],
            "task_gates": [_as_gate(_rechub_mlp(g, f"{p}.gates_specific.{t}"), f"{p}.gates_specific.{t}")
                           for t, g in enumerate(cgc.gates_specific)],
            "shared_gate": None,
        }
        if cgc.cur_level < cgc.n_level:
            level["shared_gate"] = _as_gate(_rechub_mlp(cgc.gate_shared, f"{p}.gate_shared"), f"{p}.gate_shared")
        levels.append(level)
    last = levels[-1]["shared_experts"] or levels[-1]["task_experts"][0]
    width = last[0][-1]["weight"].shape[0]
    return {**base, "levels": levels, "towers": _rechub_towers(model, width, "level")}


def _rechub_aitm(model: nn.Module) -> dict:
    """torch-rechub AITM as graph nodes (docs/SEMANTICS.md): per task a bottom MLP on x0
    (nodes 0..T-1); for t >= 1 the information MLP of task t-1's (transferred) vector, then
    attention over [task t's bottom output, that information] (query, key, value: one Linear
    without bias each; logits q.k / sqrt(D), softmax over the two); tower t reads task t's
    vector (node 0 for task 0), then sigmoid."""
    T = model.n_task
    if len(model.bottoms) != T or len(model.towers) != T or len(model.info_gates) != T - 1 or len(model.aits) != T - 1:
        raise ExportError(f"AITM: expected {T} bottoms and towers and {T - 1} info gates and attention layers")
    nodes: list[dict] = [{"op": "mlp", "input": "x0", "mlp": _rechub_mlp(b, f"bottoms.{t}")} for t, b in enumerate(model.bottoms)]
    vector = [0]  # the node holding each task's tower input
    for t in range(1, T):
        ait = model.aits[t - 1]
        where = f"aits.{t - 1}"
        if type(ait).__name__ != "AttentionLayer" or not isinstance(getattr(ait, "softmax", None), nn.Softmax) \
                or ait.softmax.dim != 1:
            raise ExportError(f"{where}: expected torch-rechub's AttentionLayer (softmax over dim 1)")
        nodes.append({"op": "mlp", "input": ["node", vector[t - 1]], "mlp": _rechub_mlp(model.info_gates[t - 1], f"info_gates.{t - 1}")})
        # torch.sqrt(torch.tensor(dim)): the f32 square root the library divides by.
        temperature = float(torch.sqrt(torch.tensor(ait.dim)).item())
        nodes.append({"op": "attention", "inputs": [["node", t], ["node", len(nodes) - 1]],
                      "query": [_linear(ait.q_layer, f"{where}.q_layer")],
                      "key": [_linear(ait.k_layer, f"{where}.k_layer")],
                      "value": [_linear(ait.v_layer, f"{where}.v_layer")],
                      "temperature": temperature})
        vector.append(len(nodes) - 1)
    # AITM applies torch.sigmoid to every tower's output (all its tasks are binary).
    towers = [{"mlp": _rechub_mlp(tw, f"towers.{t}"), "input": "node", "node": vector[t], "activation": "sigmoid"}
              for t, tw in enumerate(model.towers)]
    return {"levels": [], "nodes": nodes, "towers": towers}


# --------------------------------------------------------------------------- DeepCTR-Torch


def _deepctr_features(model: nn.Module) -> dict:
    from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat

    cols = list(model.dnn_feature_columns)
    names = [c.name for c in cols]
    if len(set(names)) != len(names):
        raise ExportError(f"dnn_feature_columns: duplicate feature names in {names}")
    feats, tables = [], {}
    order = {"sparse": [], "seq": [], "dense": []}
    for c in cols:
        where = f"feature {c.name!r}"
        if isinstance(c, DenseFeat):
            feats.append({"name": c.name, "kind": "dense", "width": int(c.dimension)})
            order["dense"].append(c.name)
            continue
        if not isinstance(c, (SparseFeat, VarLenSparseFeat)):
            raise ExportError(f"{where}: unsupported feature column {type(c).__name__}")
        emb = model.embedding_dict[c.embedding_name]
        if type(emb) is not nn.Embedding or emb.max_norm is not None:
            raise ExportError(f"embedding_dict.{c.embedding_name}: only plain nn.Embedding without max_norm is supported")
        tables[c.embedding_name] = _table(emb.weight)
        if isinstance(c, SparseFeat):
            feats.append({"name": c.name, "kind": "sparse", "table": c.embedding_name, "id_f32": True})
            order["sparse"].append(c.name)
        else:
            if c.length_name is not None:
                raise ExportError(f"{where}: sequences with length_name are not supported (the file masks by pad id 0)")
            if c.combiner not in ("sum", "mean", "max"):
                raise ExportError(f"{where}: combiner {c.combiner!r} is not sum, mean or max")
            feats.append({"name": c.name, "kind": "sequence", "table": c.embedding_name, "max_len": int(c.maxlen),
                          "pooling": c.combiner, "pad_id": 0, "id_f32": True})
            order["seq"].append(c.name)
    return {"features": feats, "tables": tables, "x0_order": order["sparse"] + order["seq"] + order["dense"]}


def _deepctr_gate(dnn, final: nn.Module, where: str, final_where: str) -> list[dict]:
    layers = _deepctr_dnn(dnn, where) if dnn is not None else []
    layers.append(_linear(final, final_where))
    return layers


def _deepctr_head(hidden: list[dict], final: nn.Module, pred: nn.Module, where: str, pred_where: str) -> dict:
    """Tower hidden layers + bias-free final Linear, with the PredictionLayer bias folded in."""
    last = _linear(final, where)
    bias = last["bias"] if last["bias"] is not None else np.zeros(last["weight"].shape[0])
    if pred.use_bias:
        bias = bias + _np(pred.bias)
        last["bias"] = bias
    return {"mlp": hidden + [last], "activation": _task_act(pred.task, pred_where)}


def _deepctr_towers(model: nn.Module, inp: str) -> list[dict]:
    towers = []
    has_dnn = len(model.tower_dnn_hidden_units) > 0
    for t in range(model.num_tasks):
        hidden = _deepctr_dnn(model.tower_dnn[t], f"tower_dnn.{t}") if has_dnn else []
        tower = _deepctr_head(hidden, model.tower_dnn_final_layer[t], model.out[t],
                              f"tower_dnn_final_layer.{t}", f"out.{t}")
        towers.append({**tower, "input": inp})
    return towers


def _deepctr_spec(model: nn.Module, kind: str) -> dict:
    base = _deepctr_features(model)
    if kind == "ESMM":
        towers = []
        for task in ("ctr", "cvr"):
            hidden = _deepctr_dnn(getattr(model, f"{task}_dnn"), f"{task}_dnn")
            head = _deepctr_head(hidden, getattr(model, f"{task}_dnn_final_layer"), model.out,
                                 f"{task}_dnn_final_layer", "out")
            towers.append({**head, "input": "x0"})
        return {**base, "levels": [], "towers": towers,
                "outputs": [{"name": "ctr", "tower": 0}, {"name": "ctcvr", "product": [0, 1]}]}
    names = list(model.task_names)
    outputs = [{"name": n, "tower": t} for t, n in enumerate(names)]
    if kind == "SharedBottom":
        bottom = _deepctr_dnn(model.bottom_dnn, "bottom_dnn")
        return {**base, "bottom": bottom, "levels": [], "outputs": outputs,
                "towers": _deepctr_towers(model, "bottom")}
    has_gate_dnn = len(model.gate_dnn_hidden_units) > 0
    if kind == "MMOE":
        experts = [_deepctr_dnn(e, f"expert_dnn.{i}") for i, e in enumerate(model.expert_dnn)]
        gates = [_deepctr_gate(model.gate_dnn[t] if has_gate_dnn else None, model.gate_dnn_final_layer[t],
                               f"gate_dnn.{t}", f"gate_dnn_final_layer.{t}") for t in range(model.num_tasks)]
        level = {"task_experts": [[] for _ in gates], "shared_experts": experts, "task_gates": gates,
                 "shared_gate": None}
        return {**base, "levels": [level], "outputs": outputs,
                "towers": _deepctr_towers(model, "level")}
    # PLE
    T, S, L = model.num_tasks, model.specific_expert_num, model.num_levels
    levels = []
    for li in range(L):
        gate_rows = model.specific_gate_dnn_final_layer[li][0].out_features
        SH = gate_rows - S  # the stored shared_experts hold S modules (a DeepCTR-Torch bug); use the first SH
        if SH != model.shared_expert_num or SH > len(model.shared_experts[li][0]):
            raise ExportError(f"specific_gate_dnn_final_layer.{li}.0: width {gate_rows} gives {SH} shared experts, "
                              f"but shared_expert_num={model.shared_expert_num} and "
                              f"{len(model.shared_experts[li][0])} are stored (a model with SH > S cannot run)")
        level = {
            "task_experts": [[_deepctr_dnn(model.specific_experts[li][t][s], f"specific_experts.{li}.{t}.{s}")
                              for s in range(S)] for t in range(T)],
            "shared_experts": [_deepctr_dnn(model.shared_experts[li][0][k], f"shared_experts.{li}.0.{k}")
                               for k in range(SH)],
            "task_gates": [_deepctr_gate(model.specific_gate_dnn[li][t][0] if has_gate_dnn else None,
                                         model.specific_gate_dnn_final_layer[li][t],
                                         f"specific_gate_dnn.{li}.{t}.0", f"specific_gate_dnn_final_layer.{li}.{t}")
                           for t in range(T)],
            # DeepCTR-Torch computes a shared gate on the last level too and never uses it: dropped.
            "shared_gate": None if li == L - 1 else _deepctr_gate(
                model.shared_gate_dnn[li] if has_gate_dnn else None, model.shared_gate_dnn_final_layer[li],
                f"shared_gate_dnn.{li}", f"shared_gate_dnn_final_layer.{li}"),
        }
        levels.append(level)
    return {**base, "levels": levels, "outputs": outputs, "towers": _deepctr_towers(model, "level")}


# --------------------------------------------------------------------------- public API

_KINDS = ("PLE", "MMOE", "SharedBottom", "ESMM", "AITM")


def to_spec(model: nn.Module, *, name: str | None = None, task_names: list[str] | None = None,
            max_len: dict | int | None = None, tables: bool | dict = True) -> dict:
    """The spec of a torch-rechub or DeepCTR-Torch multi-task model (eval semantics).

    name: the model name stored in the file (default "<library>.<class>").
    task_names: output names (default: DeepCTR's task_names; torch-rechub task0, task1, ...;
    ESMM keeps its fixed [cvr, ctr, ctcvr] / [ctr, ctcvr] names unless given).
    max_len: the most ids per sample of torch-rechub sequence features ({name: L} or one int):
    the bound of a ragged sequence and the length of a padded one. Default for a feature with a
    padding_idx: DEFAULT_MAX_LEN (256); a feature without one needs it (its padded length is part
    of what it computes).
    tables: False writes no embedding table: the caller passes each sparse / sequence feature's
    embedding vectors (from a key-value store of its own; docs/C_API.md); {feature: False} for
    some features only (missing ones keep their tables).
    The spec's embedding tables are the model's own weights as numpy arrays (float32, not
    copies): write the spec before training the model further.
    """
    model = unwrap(model)
    lib = _library(model)
    kind = type(model).__name__
    if kind not in _KINDS or (kind == "AITM" and lib != "torch_rechub"):
        raise ExportError(f"{type(model).__module__}.{kind}: only {', '.join(_KINDS)} are supported "
                          "(AITM from torch-rechub only)")
    spec = _rechub_spec(model, kind, max_len) if lib == "torch_rechub" else _deepctr_spec(model, kind)
    spec["name"] = name or f"{lib}.{kind}"
    if "outputs" not in spec:
        spec["outputs"] = [{"name": f"task{t}", "tower": t} for t in range(len(spec["towers"]))]
    if task_names is not None:
        if len(task_names) != len(spec["outputs"]):
            raise ExportError(f"task_names: {len(task_names)} names for {len(spec['outputs'])} outputs")
        for o, n in zip(spec["outputs"], task_names):
            o["name"] = n
    spec.setdefault("bottom", None)
    _without_tables(spec, tables)
    return spec


def _without_tables(spec: dict, tables: bool | dict) -> None:
    """Marks the features whose tables the file leaves out (``tables``, as ``to_spec`` takes it)."""
    id_features = [f["name"] for f in spec["features"] if f["kind"] != "dense"]
    if isinstance(tables, dict):
        unknown = sorted(set(tables) - set(id_features))
        if unknown:
            raise ExportError(f"tables: {unknown} are not sparse or sequence features (those are {id_features})")
        drop = {n for n, keep in tables.items() if not keep}
    elif isinstance(tables, bool):
        drop = set() if tables else set(id_features)
    else:
        raise ExportError(f"tables: expected a bool or {{feature: bool}}, got {tables!r}")
    for f in spec["features"]:
        if f["name"] in drop:
            f["vectors"] = True


def export(model: nn.Module, path: str | os.PathLike, dtype: str = "f32", round_weights_to_f16: bool = False,
           *, progress: bool | None = None, precision: dict | None = None, equalize: bool = True,
           calibration: dict | None = None, **kwargs) -> fmt.PleFile:
    """Write a model as a .ple file: ``write(to_spec(model, **kwargs), path, ...)``. The
    embedding tables are streamed from the model's own memory (never copied whole);
    ``progress`` as in :func:`ple_runtime.write` (None: a bar when stderr is a terminal).
    ``dtype="int8"`` quantizes the dense layers of at least 32 outputs (the others and the
    tables stay f32), those reading x0 with input scales (``equalize``, ``calibration``);
    ``precision`` overrides it per layer or MLP (:func:`ple_runtime.write`)."""
    return fmt.write(to_spec(model, **kwargs), path, dtype=dtype, round_weights_to_f16=round_weights_to_f16,
                     progress=progress, precision=precision, equalize=equalize, calibration=calibration)


def torch_inputs(model: nn.Module, inputs: dict) -> Any:
    """The argument the library's forward takes for per-feature numpy inputs.

    torch-rechub: a dict of tensors (ids int64, dense float32). DeepCTR-Torch: one
    [B, C] float32 tensor with columns in ``model.feature_index`` order, built like
    ``BaseModel.predict`` does (numpy concatenate, then ``.float()``: ids go through f32).
    """
    if _library(model) == "torch_rechub":
        out = {}
        for k, v in inputs.items():
            v = np.asarray(v)
            out[k] = torch.from_numpy(v.astype(np.int64) if np.issubdtype(v.dtype, np.integer) else v.astype(np.float32))
        return out
    cols = []
    for fname in model.feature_index:
        v = np.asarray(inputs[fname])
        cols.append(v[:, None] if v.ndim == 1 else v)
    return torch.from_numpy(np.concatenate(cols, axis=-1)).float()


def run_model(model: nn.Module, inputs: dict) -> np.ndarray:
    """Score numpy inputs with the real model in eval mode; float32 [B, output_width]."""
    model = unwrap(model)
    model.eval()
    with torch.no_grad():
        return model(torch_inputs(model, inputs)).detach().cpu().numpy().astype(np.float32)


def _gate_modules(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """(module, output_is_logits) for every gate, in FORMAT.md section 5 order."""
    lib, kind = _library(model), type(model).__name__
    if lib == "torch_rechub":
        if kind == "MMOE":
            return [(g, False) for g in model.gates]
        if kind == "PLE":
            out = []
            for cgc in model.cgc_layers:
                out += [(g, False) for g in cgc.gates_specific]
                if cgc.cur_level < cgc.n_level:
                    out.append((cgc.gate_shared, False))
            return out
        return []
    if kind == "MMOE":
        return [(g, True) for g in model.gate_dnn_final_layer]
    if kind == "PLE":
        out = []
        for li in range(model.num_levels):
            out += [(g, True) for g in model.specific_gate_dnn_final_layer[li]]
            if li < model.num_levels - 1:
                out.append((model.shared_gate_dnn_final_layer[li], True))
        return out
    return []


def run_gates(model: nn.Module, inputs: dict) -> np.ndarray:
    """The real model's gate weights for `inputs` (captured with forward hooks), float32
    [B, gate_width] in FORMAT.md section 5 order; softmax applied to DeepCTR's logits."""
    model = unwrap(model)
    mods = _gate_modules(model)
    captured: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, args, out, i=i: captured.__setitem__(i, out.detach().clone()))
               for i, (m, _) in enumerate(mods)]
    try:
        run_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    parts = [(captured[i].softmax(1) if logits else captured[i]).cpu().numpy() for i, (_, logits) in enumerate(mods)]
    batch = len(next(iter(inputs.values())))
    return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((batch, 0), np.float32)
