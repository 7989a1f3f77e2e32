"""Specs from live DeepCTR 0.9.4 multi-task models on TensorFlow (Keras 2, i.e. tf-keras).

DeepCTR's ``PLE``, ``MMOE``, ``ESMM`` and ``SharedBottom`` are functions that return a plain
Keras functional model, so there is no model class to dispatch on. :func:`to_spec` walks the
model's layer graph backwards from its outputs instead, and recognises what DeepCTR's builders
create:

- each output is a ``PredictionLayer`` (``global_bias``; sigmoid for ``binary``, identity for
  ``regression``) after a ``Dense(1)`` after a tower ``DNN``, or (ESMM) a ``Multiply`` of two such
  predictions;
- a tower reads the output of a gate mixture (PLE, MMOE), of one shared bottom ``DNN``
  (SharedBottom) or the input vector x0 itself (ESMM);
- a gate mixture is DeepCTR's ``Lambda(stack)`` of expert ``DNN`` outputs weighted by a
  ``Dense(n, activation="softmax")`` gate after a gate ``DNN``. Experts used by every task's
  mixture are the shared ones (task-specific ones appear in one task's mixture only); the shared
  gate of a level is the mixture that feeds the next level's shared experts and shared gate.
  Levels are followed down to x0;
- x0 is DeepCTR's ``Concat``/``Flatten``/``NoMask`` of embedding lookups (``Embedding`` on an
  ``Input``), pooled sequences (``SequencePoolingLayer`` over an ``Embedding`` with
  ``mask_zero``: sum / mean / max, masked by id 0) and dense ``Input`` values, in the order the
  graph concatenates them (which already follows DeepCTR's ``group_name`` grouping and its
  table-sharing rules: the table a feature uses is the ``Embedding`` layer it goes through).

Every weight is read from the live layers (kernels ``[in, out]``, biases, BatchNormalization
gamma/beta/moving statistics and epsilon, Dice alphas and its own BatchNormalization, PReLU
alphas, gate kernels, ``global_bias``). Dropout is the identity at inference, regularisers do
not change the function. Anything the file cannot represent exactly is refused with
:class:`~ple_runtime.spec.ExportError` naming the layer, the DeepCTR option behind it and what
to do (``use_hash``, ``length_name``, ``weight_name``, ``DenseFeat.transform_fn``, an activation
outside relu / sigmoid / tanh / linear / softmax / dice / PReLU / LeakyReLU / ReLU, ...).

:func:`run_model` scores numpy inputs with ``model.predict`` and :func:`run_gates` returns
the model's own gate weights (a sub-model on the gates' softmax outputs), for
:func:`ple_runtime.verify`.

Nothing here imports tensorflow at module level (only :func:`run_gates` does, through the
model's own Keras package), and nothing imports torch.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import numpy as np

from . import format as fmt
from .spec import ExportError

__all__ = ["ExportError", "is_keras_model", "to_spec", "export", "keras_inputs", "run_model", "gate_model",
           "run_gates", "f16_error"]

_KERAS_ROOTS = ("tf_keras", "keras", "tensorflow")
_SUPPORTED = "DeepCTR 0.9.4's PLE, MMOE, ESMM and SharedBottom (deepctr.models.multitask)"


# --------------------------------------------------------------------------- classes and tensors


def _root(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def is_keras_model(model: Any) -> bool:
    """True for a Keras model (tf-keras, Keras 2 or 3), decided from its class without
    importing tensorflow."""
    return any(c.__name__ == "Model" and c.__module__.split(".")[0] in _KERAS_ROOTS
               for c in type(model).__mro__)


def _keras(obj: Any, *names: str) -> bool:
    """Exact class check for a built-in Keras layer (a subclass may compute something else)."""
    return _root(obj) in _KERAS_ROOTS and type(obj).__name__ in names


def _deepctr(obj: Any, *names: str) -> bool:
    return type(obj).__module__.startswith("deepctr.") and type(obj).__name__ in names


def _kind(layer: Any) -> str:
    return f"{type(layer).__module__}.{type(layer).__name__}"


def _np(variable: Any) -> np.ndarray:
    """A weight as float64 (exact for f32 weights)."""
    return np.array(variable.numpy(), dtype=np.float64)


def _table(variable: Any) -> np.ndarray:
    """An embedding table in its own float dtype, not widened to float64: the writer streams
    tables a slice at a time (docs/EXPORT.md, "Memory")."""
    return np.asarray(variable.numpy())


def _check_keras2(model: Any) -> None:
    if _root(model) == "keras":
        major = str(getattr(sys.modules.get("keras"), "__version__", "2")).split(".")[0]
        if major.isdigit() and int(major) >= 3:
            raise ExportError(
                f"{_kind(model)}: a Keras 3 model. The exporter reads Keras 2 (tf-keras) models, the combination "
                "DeepCTR 0.9.4 is tested with: install tf-keras and set TF_USE_LEGACY_KERAS=1 before tensorflow is "
                "imported, then build (and train, or load the weights into) the model again")


def _node(tensor: Any, where: str):
    """(layer, inputs) of the node that produced a symbolic Keras tensor."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        raise ExportError(f"{where}: not a symbolic Keras tensor of a functional model ({tensor!r})")
    layer, node_index, _ = history
    return layer, list(layer._inbound_nodes[node_index].keras_inputs)


def _one_input(tensor: Any, where: str):
    layer, inputs = _node(tensor, where)
    if len(inputs) != 1:
        raise ExportError(f"{where}: layer {layer.name!r} ({type(layer).__name__}) takes {len(inputs)} inputs, "
                          "expected one")
    return inputs[0]


def _check_f32(layer: Any) -> None:
    dtype = getattr(layer, "compute_dtype", None) or "float32"
    if str(dtype) != "float32":
        raise ExportError(f"layer {layer.name!r}: computes in {dtype} (a mixed-precision policy); export a model "
                          "built with the float32 policy")


# --------------------------------------------------------------------------- layers


def _bn(bn: Any, where: str) -> dict:
    if not _keras(bn, "BatchNormalization"):
        raise ExportError(f"{where}: {_kind(bn)} is not a Keras BatchNormalization")
    axis = list(bn.axis) if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    if axis not in ([1], [-1]):
        raise ExportError(f"{where}: BatchNormalization over axis {bn.axis} (only the feature axis of a 2-D "
                          "input is supported)")
    for option, default in (("renorm", False), ("virtual_batch_size", None), ("adjustment", None)):
        if getattr(bn, option, default) not in (default,):
            raise ExportError(f"{where}: BatchNormalization with {option}={getattr(bn, option)!r} is not supported "
                              f"(only the default {option}={default!r})")
    return {
        "gamma": _np(bn.gamma) if bn.scale else None,
        "beta": _np(bn.beta) if bn.center else None,
        "mean": _np(bn.moving_mean),
        "var": _np(bn.moving_variance),
        "eps": float(bn.epsilon),
    }


_ACTIVATION_FUNCTIONS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "linear": "identity",
                         "softmax": "softmax"}
_SUPPORTED_ACTIVATIONS = ("'relu', 'sigmoid', 'tanh', 'linear', 'softmax', 'dice' (DeepCTR's Dice), and the "
                          "layer classes tf.keras.layers.PReLU, LeakyReLU, ReLU (no max_value / threshold)")


def _activation(act: Any, where: str) -> dict:
    """A DNN activation sub-layer (DeepCTR's ``activation_layer(dnn_activation)``) as a spec activation."""
    if _deepctr(act, "Dice"):
        return {"activation": "dice_bn", "dice_alpha": _np(act.alphas).reshape(-1),
                "dice_bn": _bn(act.bn, f"{where} (Dice).bn")}
    if _keras(act, "Activation"):
        fn = getattr(act.activation, "__name__", repr(act.activation))
        if fn in _ACTIVATION_FUNCTIONS:
            return {"activation": _ACTIVATION_FUNCTIONS[fn]}
        raise ExportError(f"{where}: dnn_activation={fn!r} is not supported (supported: {_SUPPORTED_ACTIVATIONS}); "
                          "the .ple format has no such activation")
    if _keras(act, "PReLU"):
        alpha = _np(act.alpha)
        if alpha.ndim != 1:
            raise ExportError(f"{where}: PReLU alpha of shape {alpha.shape} (only a 2-D input's [units] alpha)")
        return {"activation": "prelu", "prelu_weight": alpha}
    if _keras(act, "LeakyReLU"):
        slope = getattr(act, "alpha", None)
        slope = getattr(act, "negative_slope", 0.3) if slope is None else slope
        return {"activation": "leaky_relu", "slope": float(slope)}
    if _keras(act, "ReLU"):
        if act.max_value is not None or float(act.threshold) != 0.0:
            raise ExportError(f"{where}: ReLU with max_value={act.max_value} / threshold={float(act.threshold)} is "
                              "not supported (only max_value=None, threshold=0)")
        slope = float(act.negative_slope)
        return {"activation": "relu"} if slope == 0.0 else {"activation": "leaky_relu", "slope": slope}
    if _keras(act, "Softmax"):
        axis = act.axis if isinstance(act.axis, int) else list(act.axis)
        if axis not in (-1, 1, [-1], [1]):
            raise ExportError(f"{where}: Softmax over axis {act.axis} (only the feature axis)")
        return {"activation": "softmax"}
    raise ExportError(f"{where}: activation layer {_kind(act)} is not supported (supported: {_SUPPORTED_ACTIVATIONS})")


def _dnn(dnn: Any, where: str) -> list[dict]:
    """DeepCTR's DNN: per hidden layer tensordot(x, kernel_i) + bias_i -> [BatchNormalization] ->
    activation -> Dropout (the identity at inference). hidden_units=() gives []."""
    if not _deepctr(dnn, "DNN"):
        raise ExportError(f"{where}: {_kind(dnn)} is not DeepCTR's DNN")
    _check_f32(dnn)
    layers = []
    for i, (kernel, bias) in enumerate(zip(dnn.kernels, dnn.bias)):
        w = _np(kernel)
        if w.ndim != 2:
            raise ExportError(f"{where}: kernel{i} has shape {w.shape}; expected a 2-D [in, out] kernel")
        layer = {"weight": w, "weight_layout": "in_out", "bias": _np(bias), "bn": None}
        if dnn.use_bn:
            layer["bn"] = _bn(dnn.bn_layers[i], f"{where} (DNN {dnn.name!r}).bn_layers[{i}]")
        layer.update(_activation(dnn.activation_layers[i], f"{where} (DNN {dnn.name!r}).activation_layers[{i}]"))
        layers.append(layer)
    return layers


def _dense(dense: Any, where: str, activation: str) -> dict:
    """A Keras Dense with the given activation ("softmax": a gate, written as its logits)."""
    if not _keras(dense, "Dense"):
        raise ExportError(f"{where}: {_kind(dense)} is not a Keras Dense")
    _check_f32(dense)
    fn = getattr(dense.activation, "__name__", repr(dense.activation))
    if fn != activation:
        raise ExportError(f"{where}: Dense {dense.name!r} has activation {fn!r}, expected {activation!r} as "
                          "DeepCTR builds it")
    w = _np(dense.kernel)
    return {"weight": w, "weight_layout": "in_out", "bias": _np(dense.bias) if dense.use_bias else None,
            "bn": None, "activation": "identity"}


def _identity_layer(width: int) -> list[dict]:
    """An exact pass-through for a DNN with hidden_units=() (the spec's MLPs are never empty)."""
    return [{"weight": np.eye(width), "bias": None, "bn": None, "activation": "identity"}]


def _width(tensor: Any) -> int:
    return int(tensor.shape[-1])


# --------------------------------------------------------------------------- the input vector x0


def _x0_parts(tensor: Any, where: str) -> list[tuple]:
    """The features concatenated into x0, in order: ("dense", input) | ("sparse", input, embedding)
    | ("sequence", input, embedding, mode)."""
    layer, inputs = _node(tensor, where)
    if _keras(layer, "InputLayer"):
        return [("dense", layer)]
    if _deepctr(layer, "Concat") or _keras(layer, "Concatenate"):
        if layer.axis != -1 and layer.axis != len(tensor.shape) - 1:
            raise ExportError(f"{where}: {type(layer).__name__} {layer.name!r} concatenates along axis {layer.axis} "
                              "(DeepCTR's input vector concatenates along the last axis)")
        return [part for t in inputs for part in _x0_parts(t, where)]
    if _deepctr(layer, "NoMask") or _keras(layer, "Flatten"):
        return _x0_parts(_one_input(tensor, where), where)
    if _keras(layer, "Embedding"):
        ids = _one_input(tensor, where)
        return [("sparse", _feature_input(ids, layer, where), layer)]
    if _deepctr(layer, "SequencePoolingLayer"):
        if not layer.supports_masking:
            raise ExportError(
                f"{where}: SequencePoolingLayer {layer.name!r} takes sequence lengths (VarLenSparseFeat with "
                "length_name) -- not supported: the .ple file masks padding by id 0; drop length_name and pad "
                "the sequences with 0")
        emb_out = _one_input(tensor, where)
        emb, _ = _node(emb_out, where)
        if _deepctr(emb, "WeightedSequenceLayer"):
            raise ExportError(f"{where}: VarLenSparseFeat with weight_name (WeightedSequenceLayer {emb.name!r}) is "
                              "not supported: the .ple format has no per-id weights; drop weight_name")
        if not _keras(emb, "Embedding"):
            raise ExportError(f"{where}: SequencePoolingLayer {layer.name!r} pools {_kind(emb)}, not an Embedding")
        if layer.mode not in ("sum", "mean", "max"):
            raise ExportError(f"{where}: SequencePoolingLayer {layer.name!r} mode {layer.mode!r} (sum, mean, max)")
        ids = _one_input(emb_out, where)
        return [("sequence", _feature_input(ids, emb, where), emb, layer.mode)]
    if _keras(layer, "Lambda") and len(inputs) == 1 and _keras(_node(inputs[0], where)[0], "InputLayer"):
        name = _node(inputs[0], where)[0].name
        raise ExportError(f"{where}: DenseFeat {name!r} has a transform_fn (Lambda {layer.name!r}), which the .ple "
                          "file cannot hold: apply it to the values before scoring and export a model without it")
    raise ExportError(f"{where}: unexpected layer {layer.name!r} ({_kind(layer)}) in the input vector; only "
                      f"{_SUPPORTED} are supported")


def _feature_input(ids: Any, embedding: Any, where: str) -> Any:
    """The Input layer an Embedding looks ids up from (refusing DeepCTR's hashing)."""
    layer, _ = _node(ids, where)
    if _deepctr(layer, "Hash"):
        raise ExportError(f"{where}: feature looked up through Hash layer {layer.name!r} (SparseFeat use_hash=True "
                          "or vocabulary_path): not supported; hash the ids to integers before the model and export "
                          "a model with use_hash=False")
    if not _keras(layer, "InputLayer"):
        raise ExportError(f"{where}: Embedding {embedding.name!r} reads {_kind(layer)}, not a model input")
    _check_f32(embedding)
    return layer


def _features(model: Any, x0: Any, where: str = "input vector") -> dict:
    parts = _x0_parts(x0, where)
    by_input = {}
    for part in parts:
        name = part[1].name
        if name in by_input:
            raise ExportError(f"{where}: input {name!r} enters the input vector twice")
        by_input[name] = part
    features, tables = [], {}
    for name, tensor in zip(model.input_names, model.inputs):
        if name not in by_input:
            raise ExportError(f"model input {name!r} does not reach the DNN input vector (only {_SUPPORTED} "
                              "are supported)")
        part = by_input[name]
        shape = tuple(tensor.shape)
        if len(shape) != 2 or shape[1] is None:
            raise ExportError(f"model input {name!r} has shape {shape}; expected [batch, n]")
        if part[0] == "dense":
            if not tensor.dtype.is_floating:
                raise ExportError(f"model input {name!r}: a dense input of dtype {tensor.dtype.name}")
            features.append({"name": name, "kind": "dense", "width": int(shape[1])})
            continue
        emb = part[2]
        tables[emb.name] = _table(emb.embeddings)
        if not (tensor.dtype.is_integer or tensor.dtype.name in ("float32", "float64")):
            raise ExportError(f"model input {name!r}: ids of dtype {tensor.dtype.name} (integer, float32 or "
                              "float64 ids only)")
        # float32 inputs round ids through f32 before the lookup casts them to integers
        id_f32 = tensor.dtype.name == "float32"
        if part[0] == "sparse":
            if shape[1] != 1:
                raise ExportError(f"model input {name!r}: a sparse feature of shape {shape} (expected [batch, 1])")
            features.append({"name": name, "kind": "sparse", "table": emb.name, "id_f32": id_f32})
        else:
            if not emb.mask_zero:
                raise ExportError(f"Embedding {emb.name!r}: a pooled sequence without mask_zero")
            features.append({"name": name, "kind": "sequence", "table": emb.name, "max_len": int(shape[1]),
                             "pooling": part[3], "pad_id": 0, "id_f32": id_f32})
    return {"features": features, "tables": tables, "x0_order": [p[1].name for p in parts]}


# --------------------------------------------------------------------------- gates, levels, towers


@dataclasses.dataclass
class _Mixture:
    """One gate mixture: out = sum_e softmax(gate(selector))_e * expert_e."""

    experts: list  # expert DNN layers, in stacking order
    expert_inputs: list  # the tensor each expert reads
    gate: list  # gate spec layers (gate DNN + Dense as logits)
    gate_dense: Any  # the softmax Dense layer
    gate_output: Any  # its output tensor (the gate weights)
    selector: Any  # the tensor the gate reads


def _is_mixture(tensor: Any) -> bool:
    layer, inputs = _node(tensor, "")
    return _keras(layer, "Lambda") and len(inputs) == 2


def _mixture(tensor: Any, where: str) -> _Mixture:
    """DeepCTR's gate mixture: Lambda(reduce_sum(stack * expand_dims(gate), axis=1)) over
    [Lambda(stack)(expert DNN outputs), Lambda(expand_dims)(Dense(n, softmax)(gate DNN(selector)))]."""
    layer, inputs = _node(tensor, where)
    if not (_keras(layer, "Lambda") and len(inputs) == 2):
        raise ExportError(f"{where}: {layer.name!r} ({_kind(layer)}) is not DeepCTR's gate mixture")
    stacked, weights = inputs
    stack_layer, expert_outs = _node(stacked, where)
    n = len(expert_outs)
    if not _keras(stack_layer, "Lambda") or tuple(stacked.shape[1:]) != (n, _width(tensor)):
        raise ExportError(f"{where}: {stack_layer.name!r} is not DeepCTR's stack of experts")
    experts, expert_inputs = [], []
    for t in expert_outs:
        dnn, dnn_in = _node(t, where)
        if not _deepctr(dnn, "DNN") or len(dnn_in) != 1:
            raise ExportError(f"{where}: expert {dnn.name!r} ({_kind(dnn)}) is not a DeepCTR DNN")
        experts.append(dnn)
        expert_inputs.append(dnn_in[0])
    gate_out = _one_input(weights, where)
    dense, dense_in = _node(gate_out, where)
    gwhere = f"gate {getattr(dense, 'name', '?')!r}"
    if len(dense_in) != 1 or not _keras(dense, "Dense") or int(dense.units) != n:
        raise ExportError(f"{where}: the gate of {layer.name!r} is not a Dense over its {n} experts")
    gate = [_dense(dense, gwhere, "softmax")]
    selector = dense_in[0]
    gate_dnn, gate_dnn_in = _node(selector, where)
    if _deepctr(gate_dnn, "DNN"):
        gate = _dnn(gate_dnn, gwhere) + gate
        selector = gate_dnn_in[0]
    return _Mixture(experts, expert_inputs, gate, dense, gate_out, selector)


def _expert_mlp(dnn: Any, inp: Any, where: str) -> list[dict]:
    return _dnn(dnn, where) or _identity_layer(_width(inp))


def _same(tensors: list, what: str, where: str) -> Any:
    first = tensors[0]
    if any(t is not first for t in tensors[1:]):
        raise ExportError(f"{where}: the {what} do not all read one tensor, as DeepCTR's PLE/MMOE wire them")
    return first


def _levels(task_outputs: list, where: str = "levels") -> tuple[list, Any, list]:
    """Levels (first to last), x0, and the gate-output tensors in FORMAT.md order, followed back
    from the last level's per-task mixtures."""
    n_tasks = len(task_outputs)
    levels, gates = [], []
    task_sel, shared_sel = list(task_outputs), None
    while True:
        li = -len(levels) - 1  # counted from the last level while walking back
        lw = f"{where}: level {li} (from the last)"
        mixes = [_mixture(t, f"{lw}, task {t_i}") for t_i, t in enumerate(task_sel)]
        shared_mix = _mixture(shared_sel, f"{lw}, shared gate") if shared_sel is not None else None
        lists = [m.experts for m in mixes]
        n_shared = 0  # shared experts: the common tail of every task's experts
        while n_shared < min(len(e) for e in lists) and all(
                e[-1 - n_shared] is lists[0][-1 - n_shared] for e in lists):
            n_shared += 1
        n_spec = {len(e) - n_shared for e in lists}
        if len(n_spec) != 1:
            raise ExportError(f"{lw}: tasks mix different numbers of specific experts {sorted(n_spec)}")
        S = n_spec.pop()
        spec_layers = [e[:S] for e in lists]
        seen = [id(d) for e in spec_layers for d in e]
        if len(set(seen)) != len(seen):
            raise ExportError(f"{lw}: an expert is used by some but not all tasks (not DeepCTR's PLE/MMOE)")
        shared_layers = lists[0][S:]
        task_in = []
        for t, m in enumerate(mixes):
            task_in.append(_same([m.selector] + m.expert_inputs[:S], f"task {t}'s gate and specific experts", lw))
        shared_in = [m.expert_inputs[S:] for m in mixes]
        shared_reads = [t for ins in shared_in for t in ins]
        if shared_mix is not None:
            order = [d for e in spec_layers for d in e] + shared_layers
            if len(shared_mix.experts) != len(order) or any(a is not b for a, b in zip(shared_mix.experts, order)):
                raise ExportError(f"{lw}: the shared gate does not mix every task's experts, then the shared ones")
            shared_reads = [shared_mix.selector] + shared_reads
        shared_tensor = _same(shared_reads, "shared experts and shared gate", lw) if shared_reads else None
        inputs_of = {id(d): inp for m in mixes for d, inp in zip(m.experts, m.expert_inputs)}
        lw_names = f"{where}: level {li}"
        level = {
            "task_experts": [[_expert_mlp(d, inputs_of[id(d)], f"{lw_names} expert {d.name!r}") for d in e]
                             for e in spec_layers],
            "shared_experts": [_expert_mlp(d, inputs_of[id(d)], f"{lw_names} expert {d.name!r}")
                               for d in shared_layers],
            "task_gates": [m.gate for m in mixes],
            "shared_gate": shared_mix.gate if shared_mix is not None else None,
        }
        levels.insert(0, level)
        gates[:0] = [m.gate_output for m in mixes] + ([shared_mix.gate_output] if shared_mix is not None else [])
        if not _is_mixture(task_in[0]):
            x0 = _same(task_in + ([shared_tensor] if shared_tensor is not None else []),
                       "first level's experts and gates", lw)
            return levels, x0, gates
        if shared_tensor is None:
            raise ExportError(
                f"{lw}: no shared experts (shared_expert_num=0) on a level after the first: the previous level's "
                "shared gate then feeds nothing, so Keras leaves it out of the model and it cannot be exported; "
                "use shared_expert_num >= 1 or num_levels=1")
        task_sel, shared_sel = task_in, shared_tensor
        if len(task_sel) != n_tasks:
            raise ExportError(f"{lw}: {len(task_sel)} task inputs for {n_tasks} tasks")


def _tower(pred: Any, pred_in: Any, where: str) -> tuple[dict, Any]:
    """PredictionLayer(Dense(1, use_bias=False)(DNN(tower input))) -> (tower spec, tower input tensor)."""
    if pred.task not in ("binary", "regression"):
        raise ExportError(f"{where}: PredictionLayer task {pred.task!r} (only 'binary' and 'regression')")
    dense, dense_in = _node(pred_in, where)
    if not _keras(dense, "Dense") or len(dense_in) != 1 or int(dense.units) != 1:
        raise ExportError(f"{where}: PredictionLayer {pred.name!r} does not follow a Dense(1) (got {_kind(dense)})")
    head = _dense(dense, f"{where} head {dense.name!r}", "linear")
    if pred.use_bias:  # PredictionLayer's global_bias is added to the logit
        head["bias"] = (head["bias"] if head["bias"] is not None else 0.0) + _np(pred.global_bias).reshape(1)
    hidden, tower_in = [], dense_in[0]
    dnn, dnn_in = _node(tower_in, where)
    if _deepctr(dnn, "DNN"):
        hidden, tower_in = _dnn(dnn, f"{where} tower {dnn.name!r}"), dnn_in[0]
    return {"mlp": hidden + [head], "activation": "sigmoid" if pred.task == "binary" else "identity"}, tower_in


def _structure(model: Any) -> dict:
    """The spec of a DeepCTR multi-task model (without its name), plus the kind and the gate
    tensors, read from the layer graph."""
    _check_keras2(model)
    if not getattr(model, "_is_graph_network", False) or not model.outputs:
        raise ExportError(f"{_kind(model)}: not a functional Keras model; only {_SUPPORTED} are supported")
    towers, tower_inputs, pred_index, outputs = [], [], {}, []

    def tower_of(pred: Any, tensor: Any, where: str) -> int:
        if id(pred) not in pred_index:
            spec, tin = _tower(pred, _one_input(tensor, where), where)
            pred_index[id(pred)] = len(towers)
            towers.append(spec)
            tower_inputs.append(tin)
        return pred_index[id(pred)]

    for name, tensor in zip(model.output_names, model.outputs):
        where = f"output {name!r}"
        layer, inputs = _node(tensor, where)
        if _deepctr(layer, "PredictionLayer"):
            outputs.append({"name": name, "tower": tower_of(layer, tensor, where)})
        elif _keras(layer, "Multiply") and len(inputs) == 2 and all(
                _deepctr(_node(t, where)[0], "PredictionLayer") for t in inputs):
            pair = [tower_of(_node(t, where)[0], t, where) for t in inputs]
            outputs.append({"name": name, "product": pair})
        else:
            raise ExportError(f"{where}: produced by {layer.name!r} ({_kind(layer)}), not by DeepCTR's "
                              f"PredictionLayer; only {_SUPPORTED} are supported")

    gates: list = []
    first = tower_inputs[0]
    if all(_is_mixture(t) for t in tower_inputs):
        levels, x0, gates = _levels(tower_inputs)
        kind = "MMOE" if len(levels) == 1 and not levels[0]["task_experts"][0] else "PLE"
        body = {"levels": levels, "bottom": None}
        tower_input = "level"
    elif all(t is first for t in tower_inputs) and _deepctr(_node(first, "tower input")[0], "DNN"):
        bottom, x0_in = _node(first, "tower input")
        body = {"levels": [], "bottom": _expert_mlp(bottom, x0_in[0], f"bottom DNN {bottom.name!r}")}
        x0, kind, tower_input = x0_in[0], "SharedBottom", "bottom"
    elif all(t is first for t in tower_inputs):
        x0, kind, tower_input = first, "ESMM", "x0"
        body = {"levels": [], "bottom": None}
    else:
        raise ExportError(f"the towers read different kinds of inputs; only {_SUPPORTED} are supported")
    for tower in towers:
        tower["input"] = tower_input
    return {"spec": {**_features(model, x0), **body, "towers": towers, "outputs": outputs}, "kind": kind,
            "gates": gates}


# --------------------------------------------------------------------------- public API


def to_spec(model: Any, *, name: str | None = None, task_names: list[str] | None = None) -> dict:
    """The spec of a DeepCTR 0.9.4 multi-task Keras model (inference semantics).

    name: the model name stored in the file (default "deepctr.<PLE|MMOE|SharedBottom|ESMM>").
    task_names: output names (default: the model's output names, i.e. DeepCTR's task_names).
    """
    if not is_keras_model(model):
        raise ExportError(f"{_kind(model)} is not a Keras model")
    found = _structure(model)
    spec = found["spec"]
    spec["name"] = name or f"deepctr.{found['kind']}"
    if task_names is not None:
        if len(task_names) != len(spec["outputs"]):
            raise ExportError(f"task_names: {len(task_names)} names for {len(spec['outputs'])} outputs")
        for o, n in zip(spec["outputs"], task_names):
            o["name"] = n
    return spec


def export(model: Any, path: str | os.PathLike, dtype: str = "f32", round_weights_to_f16: bool = False,
           *, progress: bool | None = None, precision: dict | None = None, equalize: bool = True,
           calibration: dict | None = None, **kwargs) -> fmt.PleFile:
    """Write a DeepCTR Keras model as a .ple file: ``write(to_spec(model, **kwargs), path, ...)``
    (``progress`` as in :func:`ple_runtime.write`)."""
    return fmt.write(to_spec(model, **kwargs), path, dtype=dtype, round_weights_to_f16=round_weights_to_f16,
                     progress=progress, precision=precision, equalize=equalize, calibration=calibration)


def keras_inputs(model: Any, inputs: dict) -> dict:
    """Per-feature numpy inputs as the model's Inputs take them: [B, n] arrays of each Input's dtype
    (sparse ids [B] become [B, 1]; float32 id inputs round ids through f32, as Keras does)."""
    out = {}
    for name, tensor in zip(model.input_names, model.inputs):
        if name not in inputs:
            raise KeyError(f"missing input {name!r} (the model's inputs are {list(model.input_names)})")
        v = np.asarray(inputs[name])
        if v.ndim == 1:
            v = v[:, None]
        out[name] = v.astype(tensor.dtype.as_numpy_dtype)
    return out


def _predict(model: Any, x: dict) -> np.ndarray:
    batch = len(next(iter(x.values())))
    out = model.predict(x, batch_size=max(1, min(batch, 4096)), verbose=0)
    parts = out if isinstance(out, list) else [out]
    return np.concatenate([np.asarray(p).reshape(batch, -1) for p in parts], axis=1).astype(np.float32)


def run_model(model: Any, inputs: dict) -> np.ndarray:
    """Score numpy inputs with ``model.predict`` (inference mode); float32 [B, outputs]."""
    return _predict(model, keras_inputs(model, inputs))


def gate_model(model: Any) -> Any | None:
    """A Keras model sharing `model`'s layers whose outputs are its softmax gates' outputs (the
    gate weights), in FORMAT.md section 5 order; None for a model without gates."""
    gates = _structure(model)["gates"]
    if not gates:
        return None
    keras = sys.modules[_root(model)]
    return keras.Model(inputs=model.inputs, outputs=gates)


def run_gates(model: Any, inputs: dict, gates: Any | None = None) -> np.ndarray:
    """The model's own gate weights, float32 [B, gate_width] in FORMAT.md section 5 order
    (`gates`: a :func:`gate_model` of it, to reuse; made here if not given)."""
    gates = gates or gate_model(model)
    if gates is None:
        return np.zeros((len(next(iter(inputs.values()))), 0), np.float32)
    return _predict(gates, keras_inputs(model, inputs))


def _statistics(model: Any) -> set:
    """ids of BatchNormalization moving statistics (Keras' counterpart of torch's buffers)."""
    out = set()
    for m in model.submodules:
        if _keras(m, "BatchNormalization"):
            out |= {id(m.moving_mean), id(m.moving_variance)}
    return out


def f16_error(model: Any, inputs: dict, ref: np.ndarray, ref_gates: np.ndarray | None = None, draws: int = 4,
              rows: np.ndarray | None = None) -> tuple[float, float]:
    """The error that storing the Keras model's own weights in f16 causes on `inputs` (round to
    nearest, and the mean over `draws` stochastic roundings), like
    :func:`ple_runtime.verify.torch_f16_error`: every weight but the BatchNormalization moving
    statistics is rounded in place, the model is scored, and every weight is restored."""
    from .verify import rel_err, round_to_f16

    sel = slice(None) if rows is None else rows
    stats = _statistics(model)
    params = [v for v in model.weights if id(v) not in stats and v.dtype.is_floating]
    saved = [v.numpy().copy() for v in params]
    gates = gate_model(model) if ref_gates is not None else None

    def err(seed: int | None) -> float:
        rng = None if seed is None else np.random.default_rng(seed)
        for v, value in zip(params, saved):
            v.assign(round_to_f16(value.astype(np.float64), rng).astype(value.dtype))
        e = rel_err(run_model(model, inputs)[sel], ref[sel])
        if ref_gates is not None:
            e = max(e, rel_err(run_gates(model, inputs, gates)[sel], ref_gates[sel]))
        return e

    try:
        nearest = err(None)
        stochastic = float(np.mean([err(seed) for seed in range(draws)])) if draws else 0.0
    finally:
        for v, value in zip(params, saved):
            v.assign(value)
    return nearest, stochastic
