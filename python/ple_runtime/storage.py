"""How a spec's values become the tensors a ``.ple`` file stores (docs/FORMAT.md 3.2, 3.6):
eval BatchNorm folded into the preceding Linear, Dice's BatchNorm as scale/shift rows, and
dense weights packed into panel16. Everything here is float64; the writer rounds once.
"""

from __future__ import annotations

import numpy as np


def fold_batchnorm(layer: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """Fold a canonical layer's eval BatchNorm into its Linear, in float64.

    Returns (W' [out, in], b' [out] or None): ``s = gamma / sqrt(var + eps)``,
    ``W' = W * s`` per output row, ``b' = (b - mean) * s + beta``.
    """
    w, b, bn = layer["weight"], layer["bias"], layer["bn"]
    if bn is None:
        return w, b
    s = bn["gamma"] / np.sqrt(bn["var"] + bn["eps"])
    b0 = b if b is not None else np.zeros(w.shape[0])
    return w * s[:, None], (b0 - bn["mean"]) * s + bn["beta"]


def dice_bn_rows(layer: dict) -> np.ndarray:
    """The [3, n] parameter of a dice_bn layer in float64: rows scale, shift, alpha."""
    bn = layer["dice_bn"]
    scale = bn["gamma"] / np.sqrt(bn["var"] + bn["eps"])
    shift = bn["beta"] - bn["mean"] * scale
    return np.stack([scale, shift, layer["dice_alpha"]])


def pack_panel16(logical: np.ndarray) -> np.ndarray:
    """Pack a logical [k, n] weight into panel16 order (flat, zero padded past n).

    Element (r, c) lands at ``(c // 16) * k * 16 + r * 16 + c % 16``.
    """
    k, n = logical.shape
    panels = -(-n // 16)
    padded = np.zeros((k, panels * 16), dtype=logical.dtype)
    padded[:, :n] = logical
    return np.ascontiguousarray(padded.reshape(k, panels, 16).transpose(1, 0, 2)).reshape(-1)


def unpack_panel16(flat: np.ndarray, k: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_panel16`: the logical [k, n] matrix."""
    panels = -(-n // 16)
    return np.ascontiguousarray(flat.reshape(panels, k, 16).transpose(1, 0, 2).reshape(k, panels * 16)[:, :n])
