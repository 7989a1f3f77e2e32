"""Writer and strict reader of the ``.ple`` weight file (docs/FORMAT.md, version 1.0).

:func:`write` turns a spec (:mod:`ple_runtime.spec`) into a file: it folds eval
BatchNorm into the preceding Linear in float64 and rounds once, packs dense weights
into panel16, lays tensors out canonically and checksums the result, then reads the
file back with :func:`read_header_and_meta` (which checks everything FORMAT.md
section 4 lists) so that a file it returns is one the Rust reader must accept.

Layout decisions FORMAT.md leaves to the writer, fixed here so that the same spec
always gives the same bytes: strings are interned in first-use order (model name,
features, tensors, outputs); tensors are the embedding tables in ``spec["tables"]``
order, then per MLP (in :func:`ple_runtime.spec.iter_mlps` order) per layer its
weight, bias and activation parameter; MLPs are numbered in that same order.

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
from .spec import SpecError, iter_mlps, normalize

MAGIC = b"\x89PLE\r\n\x1a\n"
MAJOR, MINOR = 1, 0
HEADER_SIZE = 64
ALIGN = 64
NONE = 0xFFFFFFFF
MAX_META = 64 << 20

DTYPE_F32, DTYPE_F16 = 1, 2
DTYPE_NAMES = {DTYPE_F32: "f32", DTYPE_F16: "f16"}
ELEMENT_SIZE = {DTYPE_F32: 4, DTYPE_F16: 2}
LAYOUT_PLAIN, LAYOUT_PANEL16 = 0, 1
LAYOUT_NAMES = {LAYOUT_PLAIN: "plain", LAYOUT_PANEL16: "panel16"}

KIND_DENSE, KIND_SPARSE, KIND_SEQUENCE = 1, 2, 3
KIND_CODES = {"dense": KIND_DENSE, "sparse": KIND_SPARSE, "sequence": KIND_SEQUENCE}
POOL_CODES = {"sum": 1, "mean": 2, "max": 3}
FLAG_ID_F32 = 1

ACT_CODES = {
    "identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "leaky_relu": 4, "prelu": 5,
    "dice_rechub": 6, "dice_bn": 7, "softmax": 8,
}
ACT_NAMES = {code: name for name, code in ACT_CODES.items()}
TOWER_INPUT_CODES = {"x0": 0, "bottom": 1, "level": 2}
TOWER_ACT_CODES = {"identity": 0, "sigmoid": 2}

# FORMAT.md section 3.8.
LIMIT_STRINGS = 1_000_000
LIMIT_TENSORS = 1_000_000
LIMIT_MLPS = 1_000_000


class FormatError(ValueError):
    """A file that breaks FORMAT.md (reader) or a model the format cannot hold (writer)."""


def align64(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


# --------------------------------------------------------------------------- writing


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
    """Serialise a canonical spec's metadata, registering tensors on the way."""
    name_idx = b.string(canon["name"])
    feature_names = [b.string(f["name"]) for f in canon["features"]]
    table_idx = {tname: b.table("table." + tname, arr) for tname, arr in canon["tables"].items()}

    mlp_records: list[bytes] = []
    mlp_index: dict[str, int] = {}
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
        mlp_index[role] = len(mlp_records)
        mlp_records.append(struct.pack("<I", len(layers)) + b"".join(layers))
    output_names = [b.string(o["name"]) for o in canon["outputs"]]

    out = bytearray()
    out += struct.pack("<I", len(b.strings))
    for s in b.strings:
        raw = s.encode("utf-8")
        out += struct.pack("<H", len(raw)) + raw
    out += struct.pack("<I", len(b.tensors))
    offset = 0
    for t in b.tensors:
        out += struct.pack("<IBBHIIQQ", b.string_index[t.name], t.dtype, t.layout, 0, t.rows, t.cols, offset, len(t.data))
        offset = align64(offset + len(t.data))
    out += struct.pack("<II", name_idx, 0)

    out += struct.pack("<I", len(canon["features"]))
    for f, fname in zip(canon["features"], feature_names):
        if f["kind"] == "dense":
            rec = (KIND_DENSE, 0, 0, 0, f["width"], 0, NONE, 0)
        else:
            seq = f["kind"] == "sequence"
            rec = (KIND_CODES[f["kind"]], POOL_CODES[f["pooling"]] if seq else 0,
                   1 if seq and f["pad_id"] is not None else 0, FLAG_ID_F32 if f["id_f32"] else 0,
                   canon["tables"][f["table"]].shape[1], f["max_len"] if seq else 0, table_idx[f["table"]],
                   f["pad_id"] if seq and f["pad_id"] is not None else 0)
        out += struct.pack("<IBBBBIIIIq", fname, *rec[:7], 0, rec[7])
    position = {f["name"]: i for i, f in enumerate(canon["features"])}
    out += struct.pack("<I", len(canon["x0_order"]))
    out += b"".join(struct.pack("<I", position[n]) for n in canon["x0_order"])

    out += struct.pack("<I", len(mlp_records)) + b"".join(mlp_records)

    n_tasks = len(canon["towers"])
    out += struct.pack("<III", mlp_index.get("bottom", NONE), n_tasks, len(canon["levels"]))
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
    out += struct.pack("<I", len(canon["outputs"]))
    for o, oname in zip(canon["outputs"], output_names):
        if "tower" in o:
            out += struct.pack("<IB3xII", oname, 0, o["tower"], NONE)
        else:
            out += struct.pack("<IB3xII", oname, 1, *o["product"])
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


def write(spec: dict, path: str | os.PathLike, dtype: str = "f32", round_weights_to_f16: bool = False) -> "PleFile":
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


# --------------------------------------------------------------------------- reading


@dataclasses.dataclass
class TensorInfo:
    name: str
    dtype: int
    layout: int
    rows: int
    cols: int
    offset: int
    size: int


@dataclasses.dataclass
class FeatureInfo:
    name: str
    kind: int
    pooling: int
    mask: int
    flags: int
    width: int
    max_len: int
    table: int
    pad_id: int


@dataclasses.dataclass
class LayerInfo:
    weight: int
    bias: int
    act: int
    act_scalar: float
    act_param: int


@dataclasses.dataclass
class LevelInfo:
    n_task_experts: int
    n_shared: int
    task_experts: list[int]
    shared_experts: list[int]
    task_gates: list[int]
    shared_gate: int


@dataclasses.dataclass
class TowerInfo:
    mlp: int
    input: int
    out_act: int


@dataclasses.dataclass
class OutputInfo:
    name: str
    kind: int
    a: int
    b: int


@dataclasses.dataclass
class PleFile:
    """Everything in a .ple file but the tensor data (names resolved to strings)."""

    major: int
    minor: int
    file_size: int
    meta_size: int
    data_offset: int
    data_size: int
    meta_crc: int
    data_crc: int
    strings: list[str]
    tensors: list[TensorInfo]
    name: str
    flags: int
    features: list[FeatureInfo]
    order: list[int]
    mlps: list[list[LayerInfo]]
    bottom: int
    n_tasks: int
    levels: list[LevelInfo]
    towers: list[TowerInfo]
    outputs: list[OutputInfo]
    x0_width: int = 0
    output_width: int = 0
    gate_width: int = 0


class _Cursor:
    """Bounds-checked little-endian reads over the metadata."""

    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.left():
            raise FormatError(f"truncated metadata: {what} needs {n} bytes at meta offset {self.pos}, {self.left()} left")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def u32(self, what: str) -> int:
        return self.unpack("I", what)[0]

    def count(self, what: str, record: int, limit: int, minimum: int = 0) -> int:
        n = self.u32(what)
        if n < minimum or n > limit:
            raise FormatError(f"{what} {n} is outside {minimum}..{limit}")
        if n * record > self.left():
            raise FormatError(f"truncated metadata: {what} {n} needs at least {n * record} bytes, {self.left()} left")
        return n


def read_header_and_meta(path: str | os.PathLike, verify_data: bool = True) -> PleFile:
    """Parse and strictly validate a .ple file (FORMAT.md section 4); raise FormatError."""
    with open(path, "rb") as fh:
        blob = fh.read()
    return parse(blob, verify_data=verify_data)


def parse(blob: bytes, verify_data: bool = True) -> PleFile:
    """Strictly validate the bytes of a .ple file; see :func:`read_header_and_meta`."""
    if len(blob) < HEADER_SIZE:
        raise FormatError(f"file is {len(blob)} bytes, shorter than the 64-byte header")
    if blob[:8] != MAGIC:
        raise FormatError("wrong magic: not a .ple file")
    major, minor, header_size, file_size, meta_offset, meta_size, data_offset, data_size, meta_crc, data_crc = \
        struct.unpack("<HHIQQQQQII", blob[8:64])
    if major != MAJOR:
        raise FormatError(f"unsupported format version {major}.{minor} (this reader supports 1.x)")
    if header_size != HEADER_SIZE:
        raise FormatError(f"header_size is {header_size}, expected 64")
    if file_size != len(blob):
        raise FormatError(f"file_size field is {file_size} but the file is {len(blob)} bytes")
    if meta_offset != HEADER_SIZE:
        raise FormatError(f"meta_offset is {meta_offset}, expected 64")
    if meta_size > MAX_META:
        raise FormatError(f"meta_size {meta_size} is over the 64 MiB cap")
    if HEADER_SIZE + meta_size > file_size:
        raise FormatError(f"meta_size {meta_size} runs past the end of the file")
    if data_offset != align64(HEADER_SIZE + meta_size):
        raise FormatError(f"data_offset is {data_offset}, expected align64(64 + meta_size) = {align64(64 + meta_size)}")
    if data_offset > file_size or data_size != file_size - data_offset:
        raise FormatError(f"data_size is {data_size}, expected file_size - data_offset = {file_size - data_offset}")
    meta = blob[HEADER_SIZE:HEADER_SIZE + meta_size]
    got = zlib.crc32(meta, zlib.crc32(blob[:56]))
    if got != meta_crc:
        raise FormatError(f"meta CRC mismatch: header says {meta_crc:#010x}, computed {got:#010x}")
    if any(blob[HEADER_SIZE + meta_size:data_offset]):
        raise FormatError("non-zero padding between metadata and data")
    data = blob[data_offset:]
    if verify_data:
        got = zlib.crc32(data)
        if got != data_crc:
            raise FormatError(f"data CRC mismatch: header says {data_crc:#010x}, computed {got:#010x}")

    cur = _Cursor(meta)
    strings = _read_strings(cur)

    def string(i: int, what: str) -> str:
        if i >= len(strings):
            raise FormatError(f"{what}: string index {i} out of range ({len(strings)} strings)")
        return strings[i]

    tensors = _read_tensors(cur, string, data_size)
    name_i, flags = cur.unpack("II", "model header")
    if flags != 0:
        raise FormatError(f"model flags {flags:#x} must be 0")
    model_name = string(name_i, "model name")

    features = _read_features(cur, string, tensors)
    n_order = cur.count("concatenation count", 4, spec_mod.MAX_FEATURES)
    order = list(cur.unpack(f"{n_order}I", "concatenation order"))
    if sorted(order) != list(range(len(features))):
        raise FormatError(f"concatenation order {order} is not a permutation of the {len(features)} features")

    n_mlps = cur.count("MLP count", 4 + 20, LIMIT_MLPS)
    mlps = []
    for m in range(n_mlps):
        n_layers = cur.u32(f"mlp {m} n_layers")
        if not 1 <= n_layers <= spec_mod.MAX_LAYERS:
            raise FormatError(f"mlp {m}: {n_layers} layers, expected 1..{spec_mod.MAX_LAYERS}")
        layers = []
        for i in range(n_layers):
            w, bias, act, r0, r1, r2, scalar, param = cur.unpack("IIBBBBfI", f"mlp {m} layer {i}")
            if r0 or r1 or r2:
                raise FormatError(f"mlp {m} layer {i}: reserved bytes must be 0")
            layers.append(LayerInfo(w, bias, act, scalar, param))
        mlps.append(layers)

    bottom, n_tasks, n_levels = cur.unpack("III", "structure header")
    if not 1 <= n_tasks <= spec_mod.MAX_TASKS:
        raise FormatError(f"n_tasks {n_tasks} is outside 1..{spec_mod.MAX_TASKS}")
    if n_levels > spec_mod.MAX_LEVELS:
        raise FormatError(f"n_levels {n_levels} is over {spec_mod.MAX_LEVELS}")
    levels = []
    for li in range(n_levels):
        s, sh = cur.unpack("II", f"level {li} counts")
        if n_tasks * s + sh > spec_mod.MAX_EXPERTS_PER_LEVEL:
            raise FormatError(f"level {li}: {n_tasks * s + sh} experts, over {spec_mod.MAX_EXPERTS_PER_LEVEL}")
        k = n_tasks * s + sh + n_tasks + 1
        idx = cur.unpack(f"{k}I", f"level {li} indices")
        levels.append(LevelInfo(s, sh, list(idx[:n_tasks * s]), list(idx[n_tasks * s:n_tasks * s + sh]),
                                list(idx[n_tasks * s + sh:n_tasks * s + sh + n_tasks]), idx[-1]))
    towers = []
    for t in range(n_tasks):
        mlp, inp, act, reserved = cur.unpack("IBBH", f"tower {t}")
        if reserved:
            raise FormatError(f"tower {t}: reserved field must be 0")
        towers.append(TowerInfo(mlp, inp, act))
    n_out = cur.count("n_outputs", 16, spec_mod.MAX_OUTPUTS, minimum=1)
    outputs = []
    for o in range(n_out):
        name, kind, r0, r1, r2, a, b = cur.unpack("IBBBBII", f"output {o}")
        if r0 or r1 or r2:
            raise FormatError(f"output {o}: reserved bytes must be 0")
        outputs.append(OutputInfo(string(name, f"output {o} name"), kind, a, b))
    if cur.left() and minor <= MINOR:
        raise FormatError(f"{cur.left()} trailing metadata bytes (minor {minor})")

    pf = PleFile(major, minor, file_size, meta_size, data_offset, data_size, meta_crc, data_crc, strings, tensors,
                 model_name, flags, features, order, mlps, bottom, n_tasks, levels, towers, outputs)
    _check_structure(pf)
    if verify_data:
        _check_padding(pf, data)
    return pf


def _read_strings(cur: _Cursor) -> list[str]:
    n = cur.count("string count", 2, LIMIT_STRINGS)
    out = []
    for i in range(n):
        (length,) = cur.unpack("H", f"string {i} length")
        raw = cur.take(length, f"string {i}")
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"string {i}: invalid UTF-8") from None
        try:
            spec_mod.check_string(s, f"string {i}")
        except SpecError as exc:
            raise FormatError(str(exc)) from None
        out.append(s)
    return out


def _read_tensors(cur: _Cursor, string, data_size: int) -> list[TensorInfo]:
    n = cur.count("tensor count", 32, LIMIT_TENSORS)
    tensors, names = [], set()
    expected_offset = 0
    end = 0
    for i in range(n):
        name_i, dtype, layout, reserved, rows, cols, offset, size = cur.unpack("IBBHIIQQ", f"tensor {i}")
        name = string(name_i, f"tensor {i} name")
        what = f"tensor {i} ({name!r})"
        if name in names:
            raise FormatError(f"{what}: duplicate tensor name")
        names.add(name)
        if dtype not in DTYPE_NAMES:
            raise FormatError(f"{what}: unknown dtype {dtype}")
        if layout not in LAYOUT_NAMES:
            raise FormatError(f"{what}: unknown layout {layout}")
        if reserved:
            raise FormatError(f"{what}: reserved field must be 0")
        if not (1 <= rows <= spec_mod.MAX_DIM and 1 <= cols <= spec_mod.MAX_DIM):
            raise FormatError(f"{what}: shape [{rows}, {cols}] must have dimensions in 1..2^31")
        elements = rows * cols if layout == LAYOUT_PLAIN else -(-cols // 16) * rows * 16
        if size != elements * ELEMENT_SIZE[dtype]:
            raise FormatError(f"{what}: size {size} != {elements} elements x {ELEMENT_SIZE[dtype]} bytes")
        if offset != expected_offset:
            raise FormatError(f"{what}: offset {offset} is not canonical (expected {expected_offset})")
        end = offset + size
        expected_offset = align64(end)
        tensors.append(TensorInfo(name, dtype, layout, rows, cols, offset, size))
    if align64(end) != data_size:
        raise FormatError(f"data_size {data_size} != align64(end of the last tensor) = {align64(end)}")
    return tensors


def _read_features(cur: _Cursor, string, tensors: list[TensorInfo]) -> list[FeatureInfo]:
    n = cur.count("feature count", 32, spec_mod.MAX_FEATURES, minimum=1)
    out, names = [], set()
    for i in range(n):
        name_i, kind, pooling, mask, flags, width, max_len, table, reserved, pad_id = cur.unpack("IBBBBIIIIq", f"feature {i}")
        name = string(name_i, f"feature {i} name")
        what = f"feature {i} ({name!r})"
        if name in names:
            raise FormatError(f"{what}: duplicate feature name")
        names.add(name)
        if kind not in (KIND_DENSE, KIND_SPARSE, KIND_SEQUENCE):
            raise FormatError(f"{what}: unknown kind {kind}")
        if reserved:
            raise FormatError(f"{what}: reserved field must be 0")
        if flags & ~FLAG_ID_F32 or (kind == KIND_DENSE and flags):
            raise FormatError(f"{what}: flags {flags:#x} not allowed")
        if kind == KIND_SEQUENCE:
            if pooling not in (1, 2, 3):
                raise FormatError(f"{what}: unknown pooling {pooling}")
            if mask not in (0, 1):
                raise FormatError(f"{what}: unknown mask {mask}")
            if not 1 <= max_len <= spec_mod.MAX_LEN:
                raise FormatError(f"{what}: max_len {max_len} is outside 1..{spec_mod.MAX_LEN}")
            if mask == 0 and pad_id != 0:
                raise FormatError(f"{what}: pad_id {pad_id} without mask must be 0")
        else:
            if pooling or mask:
                raise FormatError(f"{what}: pooling/mask on a non-sequence feature")
            if max_len or pad_id:
                raise FormatError(f"{what}: max_len/pad_id on a non-sequence feature")
        if kind == KIND_DENSE:
            if not 1 <= width <= spec_mod.MAX_DENSE_WIDTH:
                raise FormatError(f"{what}: width {width} is outside 1..{spec_mod.MAX_DENSE_WIDTH}")
            if table != NONE:
                raise FormatError(f"{what}: a dense feature has no table (must be NONE)")
        else:
            if table >= len(tensors):
                raise FormatError(f"{what}: table index {table} out of range")
            t = tensors[table]
            if t.layout != LAYOUT_PLAIN or t.cols != width or width < 1:
                raise FormatError(f"{what}: table {t.name!r} is not a plain [vocab, {width}] tensor")
        out.append(FeatureInfo(name, kind, pooling, mask, flags, width, max_len, table, pad_id))
    return out


def _check_structure(pf: PleFile) -> None:
    """FORMAT.md section 3.7's structural rules plus the layer and dtype rules."""
    tensors = pf.tensors
    table_use = {f.table for f in pf.features if f.kind != KIND_DENSE}
    for i, t in enumerate(tensors):
        if t.dtype == DTYPE_F16 and t.layout == LAYOUT_PLAIN and i not in table_use:
            raise FormatError(f"tensor {i} ({t.name!r}): f16 where only f32 is allowed")

    def vector(idx: int, rows: int, cols: tuple, what: str) -> TensorInfo:
        if idx >= len(tensors):
            raise FormatError(f"{what}: tensor index {idx} out of range")
        t = tensors[idx]
        if t.dtype != DTYPE_F32 or t.layout != LAYOUT_PLAIN or t.rows != rows or t.cols not in cols:
            raise FormatError(f"{what}: tensor {t.name!r} must be f32 plain [{rows}, {' or '.join(map(str, cols))}], "
                              f"is {DTYPE_NAMES[t.dtype]} {LAYOUT_NAMES[t.layout]} [{t.rows}, {t.cols}]")
        return t

    widths: list[tuple[int, int]] = []  # (k, n) per MLP
    for m, layers in enumerate(pf.mlps):
        k_prev = None
        for i, layer in enumerate(layers):
            what = f"mlp {m} layer {i}"
            if layer.weight >= len(tensors):
                raise FormatError(f"{what}: weight index {layer.weight} out of range")
            w = tensors[layer.weight]
            if w.layout != LAYOUT_PANEL16:
                raise FormatError(f"{what}: weight {w.name!r} is not panel16")
            if k_prev is not None and w.rows != k_prev:
                raise FormatError(f"{what}: weight {w.name!r} reads {w.rows} inputs, previous layer gives {k_prev}")
            n = w.cols
            if layer.bias != NONE:
                vector(layer.bias, 1, (n,), f"{what} bias")
            if layer.act not in ACT_NAMES:
                raise FormatError(f"{what}: unknown activation code {layer.act}")
            if not math.isfinite(layer.act_scalar):
                raise FormatError(f"{what}: non-finite act_scalar")
            act = ACT_NAMES[layer.act]
            if act not in ("leaky_relu", "dice_rechub") and layer.act_scalar != 0:
                raise FormatError(f"{what}: act_scalar must be 0 for {act}")
            if act == "prelu":
                vector(layer.act_param, 1, (1, n), f"{what} prelu parameter")
            elif act == "dice_rechub":
                vector(layer.act_param, 1, (1,), f"{what} dice alpha")
            elif act == "dice_bn":
                vector(layer.act_param, 3, (n,), f"{what} dice parameters")
            elif layer.act_param != NONE:
                raise FormatError(f"{what}: {act} takes no act_param")
            k_prev = n
        widths.append((tensors[layers[0].weight].rows, k_prev))

    used: set[int] = set()

    def use(m: int, what: str, k: int) -> int:
        if m >= len(pf.mlps):
            raise FormatError(f"{what}: MLP index {m} out of range")
        if m in used:
            raise FormatError(f"{what}: MLP {m} is used more than once")
        used.add(m)
        if widths[m][0] != k:
            raise FormatError(f"{what}: MLP {m} reads {widths[m][0]} inputs, its input is {k} wide")
        return widths[m][1]

    def gate(m: int, what: str, k: int, n: int) -> None:
        if use(m, what, k) != n:
            raise FormatError(f"{what}: gate MLP {m} has width {widths[m][1]}, expected {n}")
        if pf.mlps[m][-1].act != ACT_CODES["identity"]:
            raise FormatError(f"{what}: the last layer of a gate MLP must have activation identity")

    x0 = sum(f.width for f in pf.features)
    h = x0
    if pf.bottom != NONE:
        h = use(pf.bottom, "bottom", x0)
    k = h
    T = pf.n_tasks
    for li, lv in enumerate(pf.levels):
        what = f"level {li}"
        if lv.n_task_experts + lv.n_shared < 1:
            raise FormatError(f"{what}: task gate width S + SH must be >= 1")
        ds = {use(m, f"{what} expert", k) for m in lv.task_experts + lv.shared_experts}
        if len(ds) != 1:
            raise FormatError(f"{what}: experts have different output widths {sorted(ds)}")
        for t, m in enumerate(lv.task_gates):
            gate(m, f"{what} task gate {t}", k, lv.n_task_experts + lv.n_shared)
        last = li == len(pf.levels) - 1
        if last and lv.shared_gate != NONE:
            raise FormatError(f"{what}: the last level must not have a shared gate")
        if not last:
            if lv.shared_gate == NONE:
                raise FormatError(f"{what}: a shared gate is required on every level but the last")
            gate(lv.shared_gate, f"{what} shared gate", k, T * lv.n_task_experts + lv.n_shared)
        k = ds.pop()
    tower_w = []
    for t, tw in enumerate(pf.towers):
        what = f"tower {t}"
        if tw.input == 2 and not pf.levels:
            raise FormatError(f"{what}: reads the last level but there are no levels")
        if tw.input == 1 and pf.bottom == NONE:
            raise FormatError(f"{what}: reads the bottom but there is no bottom")
        if tw.input not in (0, 1, 2):
            raise FormatError(f"{what}: unknown input {tw.input}")
        if tw.out_act not in (0, 2):
            raise FormatError(f"{what}: unknown out_act {tw.out_act}")
        tower_w.append(use(tw.mlp, what, (x0, h, k)[tw.input]))
    names = set()
    out_w = 0
    for o, out in enumerate(pf.outputs):
        what = f"output {o} ({out.name!r})"
        if out.name in names:
            raise FormatError(f"{what}: duplicate output name")
        names.add(out.name)
        if out.kind not in (0, 1):
            raise FormatError(f"{what}: unknown kind {out.kind}")
        if out.a >= T or (out.kind == 1 and out.b >= T):
            raise FormatError(f"{what}: tower index out of range")
        if out.kind == 0 and out.b != NONE:
            raise FormatError(f"{what}: b must be NONE for a tower output")
        if out.kind == 1 and tower_w[out.a] != tower_w[out.b]:
            raise FormatError(f"{what}: product of towers of different widths")
        out_w += tower_w[out.a]
    work = x0 + sum(tensors[layer.weight].cols for layers in pf.mlps for layer in layers)
    if work > spec_mod.MAX_WORKING_FLOATS:
        raise FormatError(f"per-sample working size {work} floats is over the cap")
    pf.x0_width = x0
    pf.output_width = out_w
    pf.gate_width = sum(T * (lv.n_task_experts + lv.n_shared)
                        + (T * lv.n_task_experts + lv.n_shared if lv.shared_gate != NONE else 0) for lv in pf.levels)


def _check_padding(pf: PleFile, data: bytes) -> None:
    """Padding after each tensor, and panel16 columns past n, must be zero."""
    for i, t in enumerate(pf.tensors):
        end = t.offset + t.size
        nxt = pf.tensors[i + 1].offset if i + 1 < len(pf.tensors) else pf.data_size
        if any(data[end:nxt]):
            raise FormatError(f"tensor {i} ({t.name!r}): non-zero padding after the tensor")
        if t.layout == LAYOUT_PANEL16 and t.cols % 16:
            flat = tensor_array(pf, data, i, logical=False).reshape(-1, t.rows, 16)
            if np.any(flat[-1, :, t.cols % 16:] != 0):
                raise FormatError(f"tensor {i} ({t.name!r}): non-zero panel16 padding past column {t.cols}")


def tensor_array(pf: PleFile, data: bytes, index: int, logical: bool = True) -> np.ndarray:
    """Tensor `index` from the data section as stored (f32 or f16); panel16 unpacked to
    its logical [k, n] matrix when `logical`."""
    t = pf.tensors[index]
    dt = np.dtype("<f4") if t.dtype == DTYPE_F32 else np.dtype("<f2")
    flat = np.frombuffer(data, dtype=dt, count=t.size // dt.itemsize, offset=t.offset)
    if t.layout == LAYOUT_PLAIN:
        return flat.reshape(t.rows, t.cols)
    return unpack_panel16(flat, t.rows, t.cols) if logical else flat


def read_tensors(path: str | os.PathLike) -> tuple[PleFile, dict[str, np.ndarray]]:
    """Parse a file and return it with every tensor as a logical numpy array by name."""
    with open(path, "rb") as fh:
        blob = fh.read()
    pf = parse(blob)
    data = blob[pf.data_offset:]
    return pf, {t.name: tensor_array(pf, data, i) for i, t in enumerate(pf.tensors)}


def describe(pf: PleFile) -> str:
    """A human-readable summary of a parsed file (for ``python -m ple_runtime inspect``)."""
    feats = []
    for f in pf.features:
        kind = {1: "dense", 2: "sparse", 3: "sequence"}[f.kind]
        extra = ""
        if f.kind != KIND_DENSE:
            extra = f" table={pf.tensors[f.table].name}"
        if f.kind == KIND_SEQUENCE:
            extra += f" max_len={f.max_len} pooling={['', 'sum', 'mean', 'max'][f.pooling]}"
            extra += f" pad_id={f.pad_id}" if f.mask else " mask=none"
        if f.flags & FLAG_ID_F32:
            extra += " ids-via-f32"
        feats.append(f"  {f.name}: {kind} width={f.width}{extra}")
    lines = [
        f"{pf.name}: .ple {pf.major}.{pf.minor}, {pf.file_size} bytes (meta {pf.meta_size}, data {pf.data_size})",
        f"tensors: {len(pf.tensors)} ({sum(t.size for t in pf.tensors)} bytes), mlps: {len(pf.mlps)}",
        "features:", *feats,
        "x0 order: " + ", ".join(pf.features[i].name for i in pf.order) + f" (width {pf.x0_width})",
        f"bottom: {'none' if pf.bottom == NONE else f'mlp {pf.bottom}'}; tasks: {pf.n_tasks}; levels: {len(pf.levels)}",
    ]
    for li, lv in enumerate(pf.levels):
        lines.append(f"  level {li}: S={lv.n_task_experts} SH={lv.n_shared} "
                     f"shared gate={'yes' if lv.shared_gate != NONE else 'no'}")
    for t, tw in enumerate(pf.towers):
        lines.append(f"  tower {t}: mlp {tw.mlp} input={['x0', 'bottom', 'level'][tw.input]} "
                     f"out_act={'sigmoid' if tw.out_act == 2 else 'identity'}")
    lines.append("outputs: " + ", ".join(o.name if o.kind == 0 else f"{o.name}=tower{o.a}*tower{o.b}"
                                         for o in pf.outputs) + f" (width {pf.output_width}, gates {pf.gate_width})")
    return "\n".join(lines)
