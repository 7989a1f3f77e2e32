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


INT8_PANEL_HEADER = 128  # 16 f32 column scales, then 16 i32 column sums (docs/FORMAT.md 3.2)
INT8_WEIGHT_MAX = 127
INT8_MAX_K = 65536


def int8_weight_bytes(k: int, n: int) -> int:
    """Bytes of a panel16x4 int8 weight [k, n]: ceil(n/16) panels of 128 + ceil(k/4)*64."""
    return -(-n // 16) * (INT8_PANEL_HEADER + -(-k // 4) * 64)


def quantize_int8(logical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-column quantization of a logical [k, n] weight (float64 in).

    Returns (codes [k, n] int8 in -127..127, scales [n] float32): ``scale = max|w| / 127`` rounded
    to f32 (1.0 for an all-zero column), ``code = clip(rint(w / scale), -127, 127)``.
    """
    w = np.asarray(logical, dtype=np.float64)
    amax = np.abs(w).max(axis=0) if w.shape[0] else np.zeros(w.shape[1])
    scales = np.where(amax > 0, amax / INT8_WEIGHT_MAX, 1.0).astype(np.float32)
    codes = np.clip(np.rint(w / scales.astype(np.float64)), -INT8_WEIGHT_MAX, INT8_WEIGHT_MAX)
    return codes.astype(np.int8), scales


def pack_int8(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Lay out int8 codes [k, n] and column scales [n] as panel16x4 bytes (uint8, flat).

    Per group of 16 columns: the 16 scales (f32 LE), the 16 column sums of the codes (i32 LE),
    then ceil(k/4) rows of 64 bytes, bytes 4c..4c+3 being column c's codes for 4 consecutive k;
    zeros past k and n (scales of padding columns included).
    """
    k, n = codes.shape
    panels, k4 = -(-n // 16), -(-k // 4)
    padded = np.zeros((k4 * 4, panels * 16), dtype=np.int8)
    padded[:k, :n] = codes
    body = padded.reshape(k4, 4, panels, 16).transpose(2, 0, 3, 1).reshape(panels, k4 * 64)
    sc = np.zeros(panels * 16, dtype="<f4")
    sc[:n] = scales
    sums = padded.astype(np.int64).sum(axis=0).astype("<i4")
    head = np.concatenate([sc.reshape(panels, 16).view(np.uint8), sums.reshape(panels, 16).view(np.uint8)], axis=1)
    return np.ascontiguousarray(np.concatenate([head, body.view(np.uint8)], axis=1)).reshape(-1)


def unpack_int8(raw: np.ndarray, k: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_int8`: (codes [k, n] int8, scales [n] float32, column sums [n])."""
    panels, k4 = -(-n // 16), -(-k // 4)
    p = np.asarray(raw, dtype=np.uint8).reshape(panels, INT8_PANEL_HEADER + k4 * 64)
    scales = p[:, :64].copy().view("<f4").reshape(-1)[:n]
    sums = p[:, 64:128].copy().view("<i4").reshape(-1)[:n]
    body = p[:, 128:].copy().view(np.int8).reshape(panels, k4, 16, 4).transpose(1, 3, 0, 2)
    return np.ascontiguousarray(body.reshape(k4 * 4, panels * 16)[:k, :n]), scales.astype(np.float32), sums


def int8_problem(raw: np.ndarray, k: int, n: int) -> str | None:
    """What is wrong with panel16x4 bytes (the Rust reader's rules), or None."""
    if k > INT8_MAX_K:
        return f"k = {k} exceeds the int8 limit {INT8_MAX_K}"
    if len(raw) != int8_weight_bytes(k, n):
        return f"{len(raw)} bytes of int8 weights, expected {int8_weight_bytes(k, n)} for {k}x{n}"
    panels, k4 = -(-n // 16), -(-k // 4)
    p = np.asarray(raw, dtype=np.uint8).reshape(panels, INT8_PANEL_HEADER + k4 * 64)
    scales = p[:, :64].copy().view("<f4").reshape(-1)
    sums = p[:, 64:128].copy().view("<i4").reshape(-1)
    full = p[:, 128:].copy().view(np.int8).reshape(panels, k4, 16, 4).transpose(1, 3, 0, 2).reshape(k4 * 4, panels * 16)
    if (full[k:, :] != 0).any() or (full[:, n:] != 0).any():
        return "nonzero padding code"
    if (full == -128).any():
        return "code -128 (codes are -127..=127)"
    bad = ~(np.isfinite(scales[:n]) & (scales[:n] > 0))
    if bad.any():
        j = int(np.argmax(bad))
        return f"column {j}: scale {scales[j]} is not finite and positive"
    if (scales[n:].view("<u4") != 0).any():
        return "padding column has a nonzero scale"
    real = full.astype(np.int64).sum(axis=0)
    if (real != sums).any():
        j = int(np.argmax(real != sums))
        return f"column {j}: column sum {sums[j]}, but its codes sum to {real[j]}"
    return None
