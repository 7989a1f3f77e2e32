"""Writer of the ``.ple`` weight file (docs/FORMAT.md, version 1.0).

:func:`write` turns a spec (:mod:`ple_runtime.spec`) into a file: it folds eval
BatchNorm into the preceding Linear in float64 and rounds once (:mod:`.storage`), packs
dense weights into panel16, lays tensors out canonically and checksums the result, then
reads the file back with the strict reader (:func:`ple_runtime.reader.read_header_and_meta`,
which checks everything FORMAT.md section 4 lists) so that a file it returns is one the Rust
reader must accept.

The file is streamed: the metadata needs only the tensors' shapes, so it is written first,
then each tensor is converted and written in turn (an embedding table a slice of at most
:data:`CHUNK_BYTES` at a time, never copied whole, never widened to float64), with the data
checksum computed on the way and stored in the header last. Exporting a model with a
gigabyte table therefore needs a few MiB beyond the model itself (docs/EXPORT.md, "Memory").

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
import io
import math
import os
import struct
import zlib
from typing import BinaryIO, Callable, Iterator

import numpy as np

from . import progress as progress_mod
from . import spec as spec_mod
from .codes import (
    ACT_CODES, DTYPE_CODES, DTYPE_F16, DTYPE_F32, DTYPE_I8, DTYPE_NAMES, ELEMENT_SIZE, FLAG_CALLER_VECTORS, FLAG_ID_F32, HEADER_SIZE, KIND_CODES,
    LAYOUT_PANEL16, LAYOUT_PANEL16X4, LAYOUT_PLAIN, MAGIC, MINOR_INPUT_SCALES, MINOR_INT8, MINOR_NODES, MAJOR, MASK_NONE,
    MASK_PAD_ID, MAX_META, MINOR, NONE, NODE_OP_CODES, OUTPUT_PRODUCT, OUTPUT_TOWER, POOL_CODES, TOWER_ACT_CODES,
    TOWER_INPUT_CODES, FormatError, align64,
)
from .reader import PleFile, read_header_and_meta
from .spec import iter_mlps, node_mlps, normalize
from .storage import (
    INT8_MAX_K, dice_bn_rows, fold_batchnorm, int8_weight_bytes, pack_int8, pack_panel16, quantize_int8,
)

# With dtype="int8", layers with fewer outputs than this stay f32 unless `precision` says
# otherwise: quantizing their input costs as much as their whole product (gates, the last tower
# layer; docs/DESIGN.md, int8 dense layers). The layers that read x0 (the concatenated
# embeddings and raw dense features) are int8 with input scales r (format 1.2, "equalization"):
# x0's columns have unrelated magnitudes, and one quantization scale per sample would erase the
# small ones (on a trained torch-rechub PLE, docs/EXPORT.md: mean |delta score| 7.2e-3 without r);
# the quantizer reads x_j * r_j, with r_j ~ 1 / |x_j|, and the weights are diag(1/r) W.
INT8_MIN_OUTPUTS = 32

X0_SCALE_TENSOR = "input_scale.x0"
"""The one r tensor every int8 layer reading x0 shares (the runtime then quantizes x0 once)."""

CHUNK_BYTES = 4 << 20
"""The most bytes of a table converted at once (measured in the widest form a slice takes)."""


@dataclasses.dataclass
class _Tensor:
    """A tensor's record, and how to produce its stored values when the data is written."""

    name: str
    dtype: int
    layout: int
    rows: int
    cols: int
    size: int  # bytes
    values: Callable[[], Iterator[np.ndarray]]  # the stored values in file order, in pieces


class _Builder:
    """Collects strings and tensor records, then serialises the metadata; tensor values are
    computed only when :func:`_write_data` asks for them."""

    def __init__(self, dtype: str, round_weights_to_f16: bool, precision: dict | None = None,
                 equalize: bool = True, calibration: dict | None = None):
        if dtype not in ("f32", "f16", "int8"):
            raise ValueError(f"dtype must be 'f32', 'f16' or 'int8', got {dtype!r}")
        self.int8 = dtype == "int8"
        self.big_dtype = DTYPE_F16 if dtype == "f16" else DTYPE_F32
        self.round_f16 = bool(round_weights_to_f16)
        self.precision = dict(precision or {})
        for key, value in self.precision.items():
            if value not in ("f32", "f16", "int8"):
                raise ValueError(f"precision[{key!r}] must be 'f32', 'f16' or 'int8', got {value!r}")
        self.used_precision: set[str] = set()
        self.equalize = bool(equalize)
        self.calibration = calibration
        if calibration is not None and not self.equalize:
            raise ValueError("calibration= chooses the input scales of equalization; it needs equalize=True")
        self.canon: dict | None = None  # set by _build: x0's features, for the input scales
        self.x0_scale_index: int | None = None
        self._x0_scale: np.ndarray | None = None
        self.strings: list[str] = []
        self.string_index: dict[str, int] = {}
        self.tensors: list[_Tensor] = []

    def string(self, s: str) -> int:
        if s not in self.string_index:
            spec_mod.check_string(s, "string")
            self.string_index[s] = len(self.strings)
            self.strings.append(s)
        return self.string_index[s]

    def _add(self, name: str, dtype: int, layout: int, rows: int, cols: int,
             values: Callable[[], Iterator[np.ndarray]]) -> int:
        if layout == LAYOUT_PANEL16X4:
            size = int8_weight_bytes(rows, cols)
        else:
            elements = rows * cols if layout == LAYOUT_PLAIN else -(-cols // 16) * rows * 16
            size = elements * ELEMENT_SIZE[dtype]
        self.string(name)
        self.tensors.append(_Tensor(name, dtype, layout, rows, cols, size, values))
        return len(self.tensors) - 1

    def _big(self, name: str, values: np.ndarray) -> np.ndarray:
        """A dense weight or table slice rounded once to its storage dtype."""
        return _rounded(name, values, self.big_dtype, via_f16=self.round_f16)

    def table(self, name: str, arr: np.ndarray) -> int:
        rows, cols = arr.shape
        widest = max(arr.itemsize, 4)
        step = max(1, CHUNK_BYTES // (cols * widest))

        def values() -> Iterator[np.ndarray]:
            for start in range(0, rows, step):
                yield self._big(name, arr[start:start + step])

        return self._add(name, self.big_dtype, LAYOUT_PLAIN, rows, cols, values)

    def layer_dtype(self, name: str, k: int, n: int, reads_x0: bool = False) -> str:
        """The storage of weight `name` ("<mlp>.<layer>.w"): `precision`'s entry for the layer
        ("<mlp>.<layer>") or its MLP ("<mlp>"), else, in an int8 file, int8 for layers of at
        least INT8_MIN_OUTPUTS outputs and f32 for the others (with equalize=False, x0's readers
        f32 too), else the file's dtype."""
        layer = name[:-2] if name.endswith(".w") else name
        mlp = layer.rsplit(".", 1)[0]
        for key in (layer, mlp):
            if key in self.precision:
                self.used_precision.add(key)
                chosen = self.precision[key]
                break
        else:
            if not self.int8:
                return DTYPE_NAMES[self.big_dtype]
            chosen = "int8" if n >= INT8_MIN_OUTPUTS and (self.equalize or not reads_x0) else "f32"
        if chosen == "int8" and k > INT8_MAX_K:
            raise FormatError(f"tensor {name!r}: {k} inputs, over the int8 limit of {INT8_MAX_K}")
        return chosen

    def weight(self, name: str, layer: dict, reads_x0: bool = False) -> tuple[int, int | None]:
        """A layer's weight with its BatchNorm folded in, as panel16 [k = in, n = out] (f32 or
        f16), or panel16x4 int8 (quantized in float64 from the folded weight; for a layer
        reading x0 with equalization, from diag(1/r)·W). Returns the weight's tensor index and
        its input-scale tensor's (None without one)."""
        n, k = layer["weight"].shape
        chosen = self.layer_dtype(name, k, n, reads_x0)
        if chosen == "int8":
            scale_index = self.x0_scale_tensor() if reads_x0 and self.equalize else None
            scaled = scale_index is not None

            def quantized() -> Iterator[np.ndarray]:
                logical = np.ascontiguousarray(fold_batchnorm(layer)[0].T, dtype=np.float64)
                if not np.all(np.isfinite(logical)):
                    raise FormatError(f"tensor {name!r}: a weight is not finite")
                if scaled:  # powers of two: the division is exact
                    logical = logical / self.x0_scale()[:, None]
                yield pack_int8(*quantize_int8(logical))

            return self._add(name, DTYPE_I8, LAYOUT_PANEL16X4, k, n, quantized), scale_index
        dtype = DTYPE_CODES[chosen]

        def values() -> Iterator[np.ndarray]:
            logical = np.ascontiguousarray(fold_batchnorm(layer)[0].T)
            yield pack_panel16(_rounded(name, logical, dtype, via_f16=self.round_f16))

        return self._add(name, dtype, LAYOUT_PANEL16, k, n, values), None

    def x0_scale_tensor(self) -> int | None:
        """The index of the shared x0 input-scale tensor, added before its first reader; None
        when every r_j is 1 (a dense-input model without calibration: nothing to scale)."""
        if np.all(self.x0_scale() == 1.0):
            return None
        if self.x0_scale_index is None:
            width = x0_width(self.canon)
            self.x0_scale_index = self._add(X0_SCALE_TENSOR, DTYPE_F32, LAYOUT_PLAIN, 1, width,
                                             lambda: iter([self.x0_scale().astype("<f4")]))
        return self.x0_scale_index

    def x0_scale(self) -> np.ndarray:
        """r for x0's columns (float64, powers of two, computed once): see :func:`x0_input_scales`."""
        if self._x0_scale is None:
            self._x0_scale = x0_input_scales(self.canon, self.calibration)
        return self._x0_scale

    def vector(self, name: str, rows: int, cols: int, make: Callable[[], np.ndarray]) -> int:
        """A small f32 tensor (bias, activation parameter) of shape [rows, cols]."""

        def values() -> Iterator[np.ndarray]:
            yield _rounded(name, np.asarray(make(), dtype=np.float64).reshape(-1), DTYPE_F32, via_f16=False)

        return self._add(name, DTYPE_F32, LAYOUT_PLAIN, rows, cols, values)


def x0_width(canon: dict) -> int:
    widths = {f["name"]: f["width"] if f["kind"] == "dense" else canon["tables"][f["table"]].shape[1]
              for f in canon["features"]}
    return sum(widths[name] for name in canon["x0_order"])


def x0_input_scales(canon: dict, calibration: dict | None = None) -> np.ndarray:
    """The input scales r of x0's columns (docs/EXPORT.md, int8): r_j = 1 / m_j rounded to the
    nearest power of two, where m_j is a typical magnitude of column j, so that every x_j·r_j
    spans about ±1 and one quantization step per sample fits them all. Powers of two make the
    products x_j·r_j and the weights' division by r exact, so equalization changes nothing but
    the quantization.

    Data-free (``calibration`` None): an embedding column's m_j is its table column's max |value|
    (read in pieces); a raw dense column's is 1 (its scale is unknown without data; the graphs
    hold no BatchNorm on raw inputs). With ``calibration`` (per-feature inputs as
    ``Model.predict`` takes them): m_j is the measured max |x0_j| over those samples. A column
    that is all zero gets r_j = 1."""
    if calibration is not None:
        from .reference import _embed  # numpy only; x0 exactly as the runtime stages it

        mag = np.abs(_embed(canon, calibration)).max(axis=0)
    else:
        features = {f["name"]: f for f in canon["features"]}
        parts = []
        for name in canon["x0_order"]:
            f = features[name]
            if f["kind"] == "dense":
                parts.append(np.ones(f["width"]))
                continue
            table = canon["tables"][f["table"]]
            step = max(1, CHUNK_BYTES // (table.shape[1] * 8))
            col = np.zeros(table.shape[1])
            for start in range(0, table.shape[0], step):
                piece = np.abs(np.asarray(table[start:start + step], dtype=np.float64)).max(axis=0)
                col = np.maximum(col, piece)
            parts.append(col)
        mag = np.concatenate(parts)
    mag = np.where(np.isfinite(mag) & (mag > 0), mag, 1.0)
    # 2^-126..2^126: finite, > 0 and exact in f32.
    return np.exp2(np.clip(np.round(-np.log2(mag)), -126, 126))


def _rounded(name: str, values: np.ndarray, dtype: int, via_f16: bool) -> np.ndarray:
    """Values rounded once to `dtype` (little-endian; through f16 first when `via_f16`);
    a value outside the dtype's range is refused, naming the tensor."""
    with np.errstate(over="ignore"):  # overflow is reported below
        if dtype == DTYPE_F16:
            out = values.astype("<f2")
        elif via_f16:
            out = values.astype(np.float16).astype("<f4")
        else:
            out = values.astype("<f4")
    if not np.all(np.isfinite(out)):
        raise FormatError(f"tensor {name!r}: not finite after rounding to {DTYPE_NAMES[dtype]} "
                          f"(a value is outside the {DTYPE_NAMES[dtype]} range)")
    return out


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


def _build(canon: dict, b: _Builder) -> tuple[bytes, bool]:
    """Serialise a canonical spec's metadata, registering strings and tensors on the way; and
    whether it has the input-scales section (format 1.2)."""
    b.canon = canon
    name_idx = b.string(canon["name"])
    feature_names = [b.string(f["name"]) for f in canon["features"]]
    # A table only features given vectors by the caller use is not written (flag bit 1).
    stored = {f["table"] for f in canon["features"] if f["kind"] != "dense" and not f.get("vectors")}
    table_idx = {tname: b.table("table." + tname, arr) for tname, arr in canon["tables"].items() if tname in stored}
    mlp_index, mlp_records, input_scales = _mlps(canon, b)
    output_names = [b.string(o["name"]) for o in canon["outputs"]]
    meta = b"".join([
        _strings(b.strings),
        _tensor_table(b.tensors, b.string_index),
        struct.pack("<II", name_idx, 0),
        _features(canon, feature_names, table_idx),
        struct.pack("<I", len(mlp_records)), *mlp_records,
        _structure(canon, mlp_index),
        _outputs(canon, output_names),
    ])
    if input_scales or canon["nodes"]:  # FORMAT.md 3.9 (1.2), present (maybe empty) in a 1.3 file
        meta += struct.pack("<I", len(input_scales)) + b"".join(struct.pack("<III", *r) for r in input_scales)
    meta += _nodes(canon, mlp_index)  # FORMAT.md 3.10 (1.3), only in files with nodes
    return meta, bool(input_scales)


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
        out += struct.pack("<IBBHIIQQ", string_index[t.name], t.dtype, t.layout, 0, t.rows, t.cols, offset, t.size)
        offset = align64(offset + t.size)
    return bytes(out)


def _features(canon: dict, names: list[int], table_idx: dict[str, int]) -> bytes:
    """The feature records, then the concatenation order (FORMAT.md 3.4-3.5)."""
    out = bytearray(struct.pack("<I", len(canon["features"])))
    for f, name in zip(canon["features"], names):
        kind, pooling, mask, flags, max_len, table, pad_id = KIND_CODES[f["kind"]], 0, MASK_NONE, 0, 0, NONE, 0
        width = f["width"] if f["kind"] == "dense" else canon["tables"][f["table"]].shape[1]
        if f["kind"] != "dense":
            table, flags = table_idx[f["table"]] if not f.get("vectors") else NONE, FLAG_ID_F32 if f["id_f32"] else 0
            if f.get("vectors"):
                flags |= FLAG_CALLER_VECTORS
        if f["kind"] == "sequence":
            pooling, max_len = POOL_CODES[f["pooling"]], f["max_len"]
            if f["pad_id"] is not None:
                mask, pad_id = MASK_PAD_ID, f["pad_id"]
        out += struct.pack("<IBBBBIIIIq", name, kind, pooling, mask, flags, width, max_len, table, 0, pad_id)
    position = {f["name"]: i for i, f in enumerate(canon["features"])}
    out += struct.pack("<I", len(canon["x0_order"]))
    out += b"".join(struct.pack("<I", position[n]) for n in canon["x0_order"])
    return bytes(out)


def _mlps(canon: dict, b: _Builder) -> tuple[dict[str, int], list[bytes], list[tuple[int, int, int]]]:
    """Every MLP's record (FORMAT.md 3.6), registering its tensors; each role's index; and the
    (mlp, layer, tensor) of every input scale (FORMAT.md 3.9)."""
    records: list[bytes] = []
    input_scales: list[tuple[int, int, int]] = []
    index: dict[str, int] = {}
    towers_on_x0 = {f"tower{t}" for t, tower in enumerate(canon["towers"]) if tower["input"] == "x0"}
    for i, node in enumerate(canon["nodes"]):
        if "x0" in ([node["input"]] if node["op"] == "mlp" else node["inputs"]):
            towers_on_x0 |= {f"node{i}{suffix}" for suffix, _ in node_mlps(node)}
    for role, mlp in iter_mlps(canon):
        # The MLPs whose first layer reads x0: the bottom, level 0 without a bottom, x0 towers.
        on_x0 = role == "bottom" or role in towers_on_x0 or (role.startswith("l0.") and canon["bottom"] is None)
        layers = []
        for i, layer in enumerate(mlp):
            where = f"{tensor_prefix(role)}.{i}"
            n = layer["weight"].shape[0]
            wi, scale = b.weight(f"{where}.w", layer, reads_x0=on_x0 and i == 0)
            if scale is not None:
                input_scales.append((len(records), i, scale))
            has_bias = layer["bias"] is not None or layer["bn"] is not None  # fold_batchnorm's rule
            bi = b.vector(f"{where}.b", 1, n, lambda layer=layer: fold_batchnorm(layer)[1]) if has_bias else NONE
            act = layer["activation"]
            scalar, param = 0.0, NONE
            if act == "leaky_relu":
                scalar = _f32(layer["slope"], f"{where} slope")
            elif act == "prelu":
                a = layer["prelu_weight"]
                param = b.vector(f"{where}.a", 1, a.shape[0], lambda a=a: a)
            elif act == "dice_rechub":
                scalar = _f32(layer["dice_eps"], f"{where} dice eps")
                a = layer["dice_alpha"]
                param = b.vector(f"{where}.a", 1, a.shape[0], lambda a=a: a)
            elif act == "dice_bn":
                param = b.vector(f"{where}.a", 3, n, lambda layer=layer: dice_bn_rows(layer))
            layers.append(struct.pack("<IIB3xfI", wi, bi, ACT_CODES[act], scalar, param))
        index[role] = len(records)
        records.append(struct.pack("<I", len(layers)) + b"".join(layers))
    return index, records, input_scales


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


def _source(ref) -> bytes:
    """A node input (FORMAT.md 3.10): source code, 3 reserved bytes, index."""
    if ref in ("x0", "bottom"):
        return struct.pack("<B3xI", TOWER_INPUT_CODES[ref], 0)
    return struct.pack("<B3xI", TOWER_INPUT_CODES[ref[0]], ref[1])


def _nodes(canon: dict, mlp_index: dict[str, int]) -> bytes:
    """The node section (FORMAT.md 3.10), only in files with nodes (format 1.3)."""
    if not canon["nodes"]:
        return b""
    out = bytearray(struct.pack("<I", len(canon["nodes"])))
    for i, node in enumerate(canon["nodes"]):
        refs = [node["input"]] if node["op"] == "mlp" else node["inputs"]
        out += struct.pack("<B3xI", NODE_OP_CODES[node["op"]], len(refs))
        out += b"".join(_source(r) for r in refs)
        out += b"".join(struct.pack("<I", mlp_index[f"node{i}{suffix}"]) for suffix, _ in node_mlps(node))
        temperature = _f32(node["temperature"], f"node {i} temperature") if node["op"] == "attention" else 0.0
        out += struct.pack("<f", temperature)
    out += b"".join(struct.pack("<I", tower["node"] if tower["input"] == "node" else NONE)
                    for tower in canon["towers"])
    return bytes(out)


def _write_file(spec: dict, fh: BinaryIO, dtype: str, round_weights_to_f16: bool, progress: bool | None,
                label: str, precision: dict | None = None, equalize: bool = True,
                calibration: dict | None = None) -> None:
    """Stream a spec's file to ``fh`` (seekable, positioned at 0): header with the checksums
    left at zero, metadata, padding, each tensor as it is converted; then the checksums."""
    canon = normalize(spec)
    builder = _Builder(dtype, round_weights_to_f16, precision, equalize, calibration)
    meta, has_input_scales = _build(canon, builder)
    unused = set(builder.precision) - builder.used_precision
    if unused:
        raise ValueError(f"precision names no layer or MLP of the model: {sorted(unused)} "
                         f"(layers: {sorted(t.name[:-2] for t in builder.tensors if t.name.endswith('.w'))})")
    # Files without int8 keep minor 0, and int8 files without input scales minor 1, so that
    # every reader that can compute them loads them (FORMAT.md section 7).
    minor = MINOR_INPUT_SCALES if has_input_scales else MINOR_INT8 if any(
        t.dtype == DTYPE_I8 for t in builder.tensors) else 0
    if canon["nodes"]:  # 1.3: the node section follows the (possibly empty) input scales
        minor = MINOR_NODES
    if len(meta) > MAX_META:
        raise FormatError(f"metadata is {len(meta)} bytes, over the 64 MiB cap")
    data_size = 0
    for t in builder.tensors:
        data_size = align64(data_size + t.size)
    data_offset = align64(HEADER_SIZE + len(meta))
    file_size = data_offset + data_size
    head = MAGIC + struct.pack("<HHIQQQQQ", MAJOR, minor, HEADER_SIZE, file_size, HEADER_SIZE, len(meta),
                               data_offset, data_size)
    meta_crc = zlib.crc32(meta, zlib.crc32(head))
    fh.write(head + bytes(8))
    fh.write(meta)
    fh.write(bytes(data_offset - HEADER_SIZE - len(meta)))
    with progress_mod.bar(file_size, f"writing {label}", unit="B", enabled=progress) as bar:
        bar.update(data_offset)
        data_crc = _write_data(builder.tensors, fh, bar)
    fh.seek(56)
    fh.write(struct.pack("<II", meta_crc, data_crc))
    fh.seek(0, os.SEEK_END)
    if fh.tell() != file_size:
        raise AssertionError(f"wrote {fh.tell()} bytes, the header says {file_size}")


def _write_data(tensors: list[_Tensor], fh: BinaryIO, bar) -> int:
    """Write every tensor's values then its padding to align 64; return the data CRC-32."""
    crc = 0

    def put(raw) -> None:
        nonlocal crc
        fh.write(raw)
        crc = zlib.crc32(raw, crc)
        bar.update(len(raw))

    for t in tensors:
        written = 0
        for piece in t.values():
            raw = memoryview(np.ascontiguousarray(piece)).cast("B")
            put(raw)
            written += len(raw)
        if written != t.size:
            raise AssertionError(f"tensor {t.name!r}: wrote {written} bytes, its record says {t.size}")
        put(bytes(align64(written) - written))
    return crc


def to_bytes(spec: dict, dtype: str = "f32", round_weights_to_f16: bool = False,
             precision: dict | None = None, equalize: bool = True, calibration: dict | None = None) -> bytes:
    """Serialise a spec to the bytes of a .ple file (see :func:`write`; this holds the whole
    file in memory, :func:`write` does not)."""
    buf = io.BytesIO()
    _write_file(spec, buf, dtype, round_weights_to_f16, progress=False, label="<bytes>", precision=precision,
                equalize=equalize, calibration=calibration)
    return buf.getvalue()


def write(spec: dict, path: str | os.PathLike, dtype: str = "f32", round_weights_to_f16: bool = False,
          *, progress: bool | None = None, precision: dict | None = None, equalize: bool = True,
          calibration: dict | None = None) -> PleFile:
    """Write a spec as a .ple file and return the parsed file after a strict read-back.

    dtype: "f32" or "f16" storage for dense weights and embedding tables (biases and
    activation parameters are always f32), or "int8": dense layers of at least
    INT8_MIN_OUTPUTS (32) outputs as int8 (symmetric, one scale per output column), the others
    and the tables f32; the int8 layers reading x0 get input scales r (equalization, format
    1.2: see :func:`x0_input_scales`; ``calibration``, per-feature inputs, measures r instead
    of deriving it from the tables). equalize=False: no input scales, and x0's readers stay f32
    unless ``precision`` forces them (the 1.1 behaviour). precision: per-layer overrides, {"<mlp>.<layer>" or "<mlp>":
    "f32" | "f16" | "int8"}, with the tensor names' MLP prefixes (``ple inspect`` lists them),
    e.g. {"tower0": "f32", "l0.t0.e0.1": "int8"}; a key naming nothing is an error. round_weights_to_f16 (with dtype "f32"):
    store the same folded weights and tables rounded to f16 but widened back to f32,
    so a runtime's f16 and f32 paths can be compared with storage as the only rounding.
    progress: a bar on stderr while writing (None: only when stderr is a terminal;
    :mod:`ple_runtime.progress`).

    The file is written to ``<path>.tmp`` a tensor at a time, read back (the data checksum
    re-read from the file in pieces), and renamed to ``path`` only if the read-back accepts
    it; on any failure the temporary file is removed and ``path`` is left as it was.
    """
    if round_weights_to_f16 and dtype != "f32":
        raise ValueError("round_weights_to_f16 applies to dtype='f32' only")
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as fh:
            _write_file(spec, fh, dtype, round_weights_to_f16, progress, os.path.basename(path), precision,
                        equalize, calibration)
        parsed = read_header_and_meta(tmp, verify_data=True)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return parsed
