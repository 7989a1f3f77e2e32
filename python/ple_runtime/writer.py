"""Writer of the ``.ple`` weight file (docs/FORMAT.md, version 1.0).

:func:`write` turns a spec (:mod:`ple_runtime.spec`) into a file: it folds eval
BatchNorm into the preceding Linear in float64 and rounds once (:mod:`.storage`), packs
dense weights into panel16, lays tensors out canonically and checksums the result, then
reads the file back with the strict reader (:func:`ple_runtime.reader.parse`, which checks
everything FORMAT.md section 4 lists) so that a file it returns is one the Rust reader must
accept.

Layout decisions FORMAT.md leaves to the writer, fixed here so that the same spec
always gives the same bytes: strings are interned in first-use order (model name,
features, tensors, outputs); tensors are the embedding tables in ``spec["tables"]``
order, then per MLP (in :func:`ple_runtime.spec.iter_mlps` order) per layer its
weight, bias and activation parameter; MLPs are numbered in that same order. The Rust
test kit's writer makes the same choices (``tests/cross_writer.rs`` checks that both
write the same bytes).

Tensor names: ``table.<table name>``; ``<mlp>.<layer>.w`` (panel16 weight),
``<mlp>.<layer>.b`` (bias) and ``<mlp>.<layer>.a`` (activation parameter), where
``<mlp>`` is ``bottom``, ``tower<t>``, ``l<level>.t<task>.e<i>`` (task expert),
``l<level>.s.e<j>`` (shared expert), ``l<level>.t<task>.g`` (task gate) or
``l<level>.s.g`` (shared gate).
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
import zlib

import numpy as np

from . import spec as spec_mod
from .codes import (
    ACT_CODES, DTYPE_F16, DTYPE_F32, DTYPE_NAMES, FLAG_ID_F32, HEADER_SIZE, KIND_CODES, LAYOUT_PANEL16,
    LAYOUT_PLAIN, MAGIC, MAJOR, MASK_NONE, MASK_PAD_ID, MAX_META, MINOR, NONE, OUTPUT_PRODUCT, OUTPUT_TOWER,
    POOL_CODES, TOWER_ACT_CODES, TOWER_INPUT_CODES, FormatError, align64,
)
from .reader import PleFile, parse
from .spec import iter_mlps, normalize
from .storage import dice_bn_rows, fold_batchnorm, pack_panel16


@dataclasses.dataclass
class _Tensor:
    name: str
    dtype: int
    layout: int
    rows: int
    cols: int
    data: bytes


class _Builder:
    """Collects strings and tensors, then serialises the metadata."""

    def __init__(self, dtype: str, round_weights_to_f16: bool):
        if dtype not in ("f32", "f16"):
            raise ValueError(f"dtype must be 'f32' or 'f16', got {dtype!r}")
        self.big_dtype = DTYPE_F16 if dtype == "f16" else DTYPE_F32
        self.round_f16 = bool(round_weights_to_f16)
        self.strings: list[str] = []
        self.string_index: dict[str, int] = {}
        self.tensors: list[_Tensor] = []

    def string(self, s: str) -> int:
        if s not in self.string_index:
            spec_mod.check_string(s, "string")
            self.string_index[s] = len(self.strings)
            self.strings.append(s)
        return self.string_index[s]

    def _add(self, name: str, dtype: int, layout: int, rows: int, cols: int, values: np.ndarray) -> int:
        if not np.all(np.isfinite(values)):
            raise FormatError(f"tensor {name!r}: not finite after rounding to {DTYPE_NAMES[dtype]} "
                              f"(a value is outside the {DTYPE_NAMES[dtype]} range)")
        self.string(name)
        self.tensors.append(_Tensor(name, dtype, layout, rows, cols, values.astype("<" + values.dtype.str[1:]).tobytes()))
        return len(self.tensors) - 1

    def big(self, values: np.ndarray) -> tuple[int, np.ndarray]:
        """Round a dense weight or table (float64) once to its storage dtype."""
        with np.errstate(over="ignore"):  # overflow is reported by _add, naming the tensor
            if self.big_dtype == DTYPE_F16:
                return DTYPE_F16, values.astype(np.float16)
            if self.round_f16:
                return DTYPE_F32, values.astype(np.float16).astype(np.float32)
            return DTYPE_F32, values.astype(np.float32)

    def table(self, name: str, arr: np.ndarray) -> int:
        dtype, values = self.big(arr)
        return self._add(name, dtype, LAYOUT_PLAIN, arr.shape[0], arr.shape[1], values)

    def weight(self, name: str, w_out_in: np.ndarray) -> int:
        logical = np.ascontiguousarray(w_out_in.T)  # [k = in, n = out]
        dtype, values = self.big(logical)
        return self._add(name, dtype, LAYOUT_PANEL16, logical.shape[0], logical.shape[1], pack_panel16(values))

    def vector(self, name: str, arr: np.ndarray) -> int:
        arr = np.asarray(arr, dtype=np.float64)
        rows, cols = (1, arr.shape[0]) if arr.ndim == 1 else arr.shape
        return self._add(name, DTYPE_F32, LAYOUT_PLAIN, rows, cols, arr.astype(np.float32).reshape(-1))


def tensor_prefix(role: str) -> str:
    """Compact tensor-name prefix of an MLP role: 'l0.task1.expert0' -> 'l0.t1.e0',
    'l1.shared.gate' -> 'l1.s.g'; 'bottom' and 'tower<t>' stay as they are."""
    parts = role.split(".")
    short = {"shared": "s", "gate": "g"}
    out = []
    for part in parts:
        if part in short:
            out.append(short[part])
        elif part.startswith("task"):
            out.append("t" + part[4:])
        elif part.startswith("expert"):
            out.append("e" + part[6:])
        else:
            out.append(part)
    return ".".join(out)


def _f32(value: float, where: str) -> float:
    out = float(np.float32(value))
    if not math.isfinite(out):
        raise FormatError(f"{where}: {value!r} is not finite in f32")
    return out


def _build(canon: dict, b: _Builder) -> bytes:
    """Serialise a canonical spec's metadata, registering strings and tensors on the way."""
    name_idx = b.string(canon["name"])
    feature_names = [b.string(f["name"]) for f in canon["features"]]
    table_idx = {tname: b.table("table." + tname, arr) for tname, arr in canon["tables"].items()}
    mlp_index, mlp_records = _mlps(canon, b)
    output_names = [b.string(o["name"]) for o in canon["outputs"]]
    return b"".join([
        _strings(b.strings),
        _tensor_table(b.tensors, b.string_index),
        struct.pack("<II", name_idx, 0),
        _features(canon, feature_names, table_idx),
        struct.pack("<I", len(mlp_records)), *mlp_records,
        _structure(canon, mlp_index),
        _outputs(canon, output_names),
    ])


def _strings(strings: list[str]) -> bytes:
    out = bytearray(struct.pack("<I", len(strings)))
    for s in strings:
        raw = s.encode("utf-8")
        out += struct.pack("<H", len(raw)) + raw
    return bytes(out)


def _tensor_table(tensors: list[_Tensor], string_index: dict[str, int]) -> bytes:
    out = bytearray(struct.pack("<I", len(tensors)))
    offset = 0
    for t in tensors:
        out += struct.pack("<IBBHIIQQ", string_index[t.name], t.dtype, t.layout, 0, t.rows, t.cols, offset, len(t.data))
        offset = align64(offset + len(t.data))
    return bytes(out)


def _features(canon: dict, names: list[int], table_idx: dict[str, int]) -> bytes:
    """The feature records, then the concatenation order (FORMAT.md 3.4-3.5)."""
    out = bytearray(struct.pack("<I", len(canon["features"])))
    for f, name in zip(canon["features"], names):
        kind, pooling, mask, flags, max_len, table, pad_id = KIND_CODES[f["kind"]], 0, MASK_NONE, 0, 0, NONE, 0
        width = f["width"] if f["kind"] == "dense" else canon["tables"][f["table"]].shape[1]
        if f["kind"] != "dense":
            table, flags = table_idx[f["table"]], FLAG_ID_F32 if f["id_f32"] else 0
        if f["kind"] == "sequence":
            pooling, max_len = POOL_CODES[f["pooling"]], f["max_len"]
            if f["pad_id"] is not None:
                mask, pad_id = MASK_PAD_ID, f["pad_id"]
        out += struct.pack("<IBBBBIIIIq", name, kind, pooling, mask, flags, width, max_len, table, 0, pad_id)
    position = {f["name"]: i for i, f in enumerate(canon["features"])}
    out += struct.pack("<I", len(canon["x0_order"]))
    out += b"".join(struct.pack("<I", position[n]) for n in canon["x0_order"])
    return bytes(out)


def _mlps(canon: dict, b: _Builder) -> tuple[dict[str, int], list[bytes]]:
    """Every MLP's record (FORMAT.md 3.6), registering its tensors; and each role's index."""
    records: list[bytes] = []
    index: dict[str, int] = {}
    for role, mlp in iter_mlps(canon):
        layers = []
        for i, layer in enumerate(mlp):
            where = f"{tensor_prefix(role)}.{i}"
            w, bias = fold_batchnorm(layer)
            wi = b.weight(f"{where}.w", w)
            bi = NONE if bias is None else b.vector(f"{where}.b", bias)
            act = layer["activation"]
            scalar, param = 0.0, NONE
            if act == "leaky_relu":
                scalar = _f32(layer["slope"], f"{where} slope")
            elif act == "prelu":
                param = b.vector(f"{where}.a", layer["prelu_weight"])
            elif act == "dice_rechub":
                scalar = _f32(layer["dice_eps"], f"{where} dice eps")
                param = b.vector(f"{where}.a", layer["dice_alpha"])
            elif act == "dice_bn":
                param = b.vector(f"{where}.a", dice_bn_rows(layer))
            layers.append(struct.pack("<IIB3xfI", wi, bi, ACT_CODES[act], scalar, param))
        index[role] = len(records)
        records.append(struct.pack("<I", len(layers)) + b"".join(layers))
    return index, records


def _structure(canon: dict, mlp_index: dict[str, int]) -> bytes:
    """Bottom, levels and towers (FORMAT.md 3.7)."""
    n_tasks = len(canon["towers"])
    out = bytearray(struct.pack("<III", mlp_index.get("bottom", NONE), n_tasks, len(canon["levels"])))
    for li, level in enumerate(canon["levels"]):
        s, sh = len(level["task_experts"][0]), len(level["shared_experts"])
        idx = [mlp_index[f"l{li}.task{t}.expert{e}"] for t in range(n_tasks) for e in range(s)]
        idx += [mlp_index[f"l{li}.shared.expert{j}"] for j in range(sh)]
        idx += [mlp_index[f"l{li}.task{t}.gate"] for t in range(n_tasks)]
        idx.append(mlp_index.get(f"l{li}.shared.gate", NONE))
        out += struct.pack(f"<II{len(idx)}I", s, sh, *idx)
    for t, tower in enumerate(canon["towers"]):
        out += struct.pack("<IBBH", mlp_index[f"tower{t}"], TOWER_INPUT_CODES[tower["input"]],
                           TOWER_ACT_CODES[tower["activation"]], 0)
    return bytes(out)


def _outputs(canon: dict, names: list[int]) -> bytes:
    out = bytearray(struct.pack("<I", len(canon["outputs"])))
    for o, name in zip(canon["outputs"], names):
        if "tower" in o:
            out += struct.pack("<IB3xII", name, OUTPUT_TOWER, o["tower"], NONE)
        else:
            out += struct.pack("<IB3xII", name, OUTPUT_PRODUCT, *o["product"])
    return bytes(out)


def to_bytes(spec: dict, dtype: str = "f32", round_weights_to_f16: bool = False) -> bytes:
    """Serialise a spec to the bytes of a .ple file (see :func:`write`)."""
    canon = normalize(spec)
    builder = _Builder(dtype, round_weights_to_f16)
    meta = _build(canon, builder)
    if len(meta) > MAX_META:
        raise FormatError(f"metadata is {len(meta)} bytes, over the 64 MiB cap")
    data = bytearray()
    for t in builder.tensors:
        data += t.data
        data += bytes(align64(len(data)) - len(data))
    data_offset = align64(HEADER_SIZE + len(meta))
    file_size = data_offset + len(data)
    head = MAGIC + struct.pack("<HHIQQQQQ", MAJOR, MINOR, HEADER_SIZE, file_size, HEADER_SIZE, len(meta),
                               data_offset, len(data))
    meta_crc = zlib.crc32(meta, zlib.crc32(head))
    data_crc = zlib.crc32(data)
    head += struct.pack("<II", meta_crc, data_crc)
    blob = head + meta + bytes(data_offset - HEADER_SIZE - len(meta)) + data
    assert len(blob) == file_size
    return bytes(blob)


def write(spec: dict, path: str | os.PathLike, dtype: str = "f32", round_weights_to_f16: bool = False) -> PleFile:
    """Write a spec as a .ple file and return the parsed file after a strict read-back.

    dtype: "f32" or "f16" storage for dense weights and embedding tables (biases and
    activation parameters are always f32). round_weights_to_f16 (with dtype "f32"):
    store the same folded weights and tables rounded to f16 but widened back to f32,
    so a runtime's f16 and f32 paths can be compared with storage as the only rounding.
    """
    if round_weights_to_f16 and dtype != "f32":
        raise ValueError("round_weights_to_f16 applies to dtype='f32' only")
    blob = to_bytes(spec, dtype, round_weights_to_f16)
    parsed = parse(blob, verify_data=True)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(blob)
    os.replace(tmp, path)
    return parsed


