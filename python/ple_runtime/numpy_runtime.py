"""Score a written ``.ple`` file with numpy, in float64, from its stored tensors.

This is a slow second implementation of FORMAT.md's scoring semantics that reads
what :func:`ple_runtime.format.write` actually stored (folded BatchNorm, panel16
weights, f16 tables, ...). Comparing it with :func:`ple_runtime.reference.forward`
(which works on the unfolded spec) checks the writer; comparing the Rust runtime
with it isolates the runtime from the writer.
"""

from __future__ import annotations

import os

import numpy as np

from . import format as fmt


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class FileModel:
    """A parsed .ple file with its tensors widened to float64."""

    def __init__(self, path: str | os.PathLike):
        self.meta, arrays = fmt.read_tensors(path)
        self.t = [arrays[t.name].astype(np.float64) for t in self.meta.tensors]

    def _layer(self, x: np.ndarray, layer: fmt.LayerInfo) -> np.ndarray:
        y = x @ self.t[layer.weight]
        if layer.bias != fmt.NONE:
            y = y + self.t[layer.bias][0]
        act = fmt.ACT_NAMES[layer.act]
        p = self.t[layer.act_param] if layer.act_param != fmt.NONE else None
        if act == "identity":
            return y
        if act == "relu":
            return np.maximum(y, 0)
        if act == "sigmoid":
            return _sigmoid(y)
        if act == "tanh":
            return np.tanh(y)
        if act == "leaky_relu":
            return np.where(y >= 0, y, float(layer.act_scalar) * y)
        if act == "prelu":
            return np.where(y >= 0, y, p[0] * y)
        if act == "dice_rechub":
            avg = y.mean(axis=1, keepdims=True)
            var = ((y - avg) ** 2 + float(layer.act_scalar)).sum(axis=1, keepdims=True)
            q = _sigmoid((y - avg) / np.sqrt(var))
            return q * y + (1 - q) * p[0, 0] * y
        if act == "dice_bn":
            q = _sigmoid(y * p[0] + p[1])
            return q * y + (1 - q) * p[2] * y
        if act == "softmax":
            return _softmax(y)
        raise fmt.FormatError(f"unknown activation {act}")

    def mlp(self, x: np.ndarray, m: int) -> np.ndarray:
        for layer in self.meta.mlps[m]:
            x = self._layer(x, layer)
        return x

    def x0(self, inputs: dict) -> np.ndarray:
        parts = []
        for f in self.meta.features:
            v = np.asarray(inputs[f.name])
            if f.kind == fmt.KIND_DENSE:
                parts.append(v.astype(np.float32).astype(np.float64).reshape(v.shape[0], f.width))
                continue
            ids = v.astype(np.int64)
            if f.flags & fmt.FLAG_ID_F32:
                ids = ids.astype(np.float32).astype(np.int64)
            table = self.t[f.table]
            if ids.min() < 0 or ids.max() >= table.shape[0]:
                raise ValueError(f"feature {f.name!r}: id out of range")
            e = table[ids]
            if f.kind == fmt.KIND_SPARSE:
                parts.append(e)
                continue
            m = (ids != f.pad_id) if f.mask == 1 else np.ones(ids.shape, dtype=bool)
            if f.pooling == 1:
                parts.append((m[:, :, None] * e).sum(axis=1))
            elif f.pooling == 2:
                n = m.sum(axis=1, keepdims=True)
                parts.append((m[:, :, None] * e).sum(axis=1) / np.maximum(n, 1))
            else:
                shifted = np.where(m[:, :, None], e.astype(np.float32), e.astype(np.float32) - np.float32(1e9))
                parts.append(shifted.astype(np.float32).max(axis=1).astype(np.float64))
        return np.concatenate([parts[i] for i in self.meta.order], axis=1)

    def score(self, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
        """(outputs [B, output_width], gates [B, gate_width]) in float64."""
        meta = self.meta
        x0 = self.x0(inputs)
        h = self.mlp(x0, meta.bottom) if meta.bottom != fmt.NONE else x0
        T = meta.n_tasks
        sel = [h] * (T + 1)
        gates = []
        for lv in meta.levels:
            S = lv.n_task_experts
            task = [self.mlp(sel[t], lv.task_experts[t * S + s]) for t in range(T) for s in range(S)]
            shared = [self.mlp(sel[T], m) for m in lv.shared_experts]
            new = []
            for t in range(T):
                w = _softmax(self.mlp(sel[t], lv.task_gates[t]))
                gates.append(w)
                new.append(np.einsum("be,bed->bd", w, np.stack(task[t * S:(t + 1) * S] + shared, axis=1)))
            if lv.shared_gate != fmt.NONE:
                w = _softmax(self.mlp(sel[T], lv.shared_gate))
                gates.append(w)
                new.append(np.einsum("be,bed->bd", w, np.stack(task + shared, axis=1)))
            sel = new
        towers = []
        for t, tw in enumerate(meta.towers):
            y = self.mlp((x0, h, sel[t] if meta.levels else None)[tw.input], tw.mlp)
            towers.append(_sigmoid(y) if tw.out_act == 2 else y)
        outs = [towers[o.a] if o.kind == 0 else towers[o.a] * towers[o.b] for o in meta.outputs]
        batch = x0.shape[0]
        return (np.concatenate(outs, axis=1),
                np.concatenate(gates, axis=1) if gates else np.zeros((batch, 0)))


def score_file(path: str | os.PathLike, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """Score `inputs` (feature name -> array) with the file at `path`; float64 results."""
    return FileModel(path).score(inputs)
