"""Strict reader of the ``.ple`` weight file (docs/FORMAT.md, version 1.0).

:func:`parse` checks everything FORMAT.md section 4 lists, section by section in file
order (header, strings, tensors, model header, features, concatenation order, MLPs,
structure, outputs), then the graph's rules (:mod:`.graph_check`); it raises
:class:`FormatError` naming the record at fault. :func:`read_spec` turns a file back into a
spec (:mod:`ple_runtime.spec`), so the float64 reference can score what a file stores.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import zlib

import numpy as np

from .codes import (
    ACT_NAMES, DTYPE_F32, DTYPE_I8, DTYPE_NAMES, ELEMENT_SIZE, FLAG_CALLER_VECTORS, FLAG_ID_F32, FormatError, HEADER_SIZE, KIND_DENSE, KIND_NAMES,
    KIND_SEQUENCE, LAYOUT_NAMES, LAYOUT_PANEL16, LAYOUT_PANEL16X4, LAYOUT_PLAIN, MINOR_INT8, MINOR_INPUT_SCALES, LIMIT_MLPS, LIMIT_STRINGS, LIMIT_TENSORS, MAGIC,
    MAJOR, MASK_NAMES, MASK_PAD_ID, MAX_DENSE_WIDTH, MAX_EXPERTS_PER_LEVEL, MAX_FEATURES, MAX_LAYERS, MAX_LEN,
    MAX_LEVELS, MAX_META, MAX_NODE_INPUTS, MAX_NODES, MAX_OUTPUTS, MAX_TASKS, MINOR, MINOR_NODES, NODE_MLP, NODE_OP_NAMES,
    NONE, OUTPUT_KIND_NAMES, OUTPUT_TOWER, POOL_NAMES, TENSOR_DIM_LIMIT, TOWER_ACT_NAMES, TOWER_INPUT_CODES,
    TOWER_INPUT_NAMES, align64,
)
from .graph_check import check_graph, unique_name
from .spec import SpecError, check_string
from .storage import int8_problem, int8_weight_bytes, unpack_int8, unpack_panel16


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
class NodeInfo:
    op: int
    inputs: list[tuple[int, int]]  # (source code, index)
    mlps: list[int]  # mlp: [mlp]; attention: [query, key, value]
    temperature: float


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
    nodes: list[NodeInfo] = dataclasses.field(default_factory=list)
    tower_nodes: list[int] = dataclasses.field(default_factory=list)
    x0_width: int = 0
    output_width: int = 0
    gate_width: int = 0
    # Format 1.2: (mlp, layer, tensor) of each int8 layer whose quantizer reads x_j * r_j.
    input_scales: list = dataclasses.field(default_factory=list)


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


def _known(code: int, names: dict[int, str], what: str, field: str) -> None:
    """Refuse a code its field does not have, naming the record, the field, the value and the
    codes that exist (the Rust reader's message)."""
    if code not in names:
        known = ", ".join(f"{c} {n}" for c, n in sorted(names.items()))
        raise FormatError(f"{what}: unknown {field} {code} (known: {known})")


class _Blob:
    """The bytes of a file held in memory."""

    def __init__(self, blob: bytes):
        self.blob = blob
        self.size = len(blob)

    def read(self, start: int, n: int) -> bytes:
        return bytes(self.blob[start:start + n])

    def crc32(self, start: int, end: int) -> int:
        return zlib.crc32(memoryview(self.blob)[start:end])


class _OpenFile:
    """A file read a piece at a time: the reader needs the header and metadata, the data
    checksum reads the rest in pieces, so a file of any size is checked in little memory."""

    PIECE = 4 << 20

    def __init__(self, fh):
        self.fh = fh
        self.size = os.fstat(fh.fileno()).st_size

    def read(self, start: int, n: int) -> bytes:
        self.fh.seek(start)
        out = self.fh.read(n)
        if len(out) != n:
            raise FormatError(f"the file changed while it was read ({len(out)} of {n} bytes at offset {start})")
        return out

    def crc32(self, start: int, end: int) -> int:
        crc = 0
        for pos in range(start, end, self.PIECE):
            crc = zlib.crc32(self.read(pos, min(self.PIECE, end - pos)), crc)
        return crc


def read_header_and_meta(path: str | os.PathLike, verify_data: bool = True) -> PleFile:
    """Parse and strictly validate a .ple file (FORMAT.md section 4); raise FormatError.
    Reads the header and metadata, and with `verify_data` the data section in pieces (for
    its checksum and padding): never the whole file at once."""
    with open(path, "rb") as fh:
        return _parse(_OpenFile(fh), verify_data)


def parse(blob: bytes, verify_data: bool = True) -> PleFile:
    """Strictly validate the bytes of a .ple file; see :func:`read_header_and_meta`."""
    return _parse(_Blob(blob), verify_data)


def _parse(src, verify_data: bool) -> PleFile:
    header = _read_header(src, verify_data)
    major, minor, file_size, meta_size, data_offset, data_size, meta_crc, data_crc = header
    cur = _Cursor(src.read(HEADER_SIZE, meta_size))
    strings = _read_strings(cur)

    def string(i: int, what: str) -> str:
        if i >= len(strings):
            raise FormatError(f"{what}: string index {i} out of range ({len(strings)} strings)")
        return strings[i]

    tensors = _read_tensors(cur, string, data_size)
    if minor < MINOR_INT8 and any(t.dtype == DTYPE_I8 for t in tensors):
        raise FormatError(f"an i8 tensor in a {major}.{minor} file (i8 needs format 1.{MINOR_INT8})")
    name_i, flags = cur.unpack("II", "model header")
    if flags != 0:
        raise FormatError(f"model flags {flags:#x} must be 0")
    model_name = string(name_i, "model name")
    features = _read_features(cur, string, tensors)
    n_order = cur.count("concatenation count", 4, MAX_FEATURES)
    order = list(cur.unpack(f"{n_order}I", "concatenation order"))
    if sorted(order) != list(range(len(features))):
        raise FormatError(f"concatenation order {order} is not a permutation of the {len(features)} features")
    mlps = _read_mlps(cur)
    bottom, n_tasks, levels = _read_levels(cur)
    towers = _read_towers(cur, n_tasks)
    if minor < MINOR_NODES and any(tw.input == TOWER_INPUT_CODES["node"] for tw in towers):
        raise FormatError(f"a tower reads a graph node, which needs format 1.{MINOR_NODES} (the file is {major}.{minor})")
    outputs = _read_outputs(cur, string)
    input_scales = []
    if minor >= MINOR_INPUT_SCALES:
        n = cur.count("input scale count", 12, LIMIT_MLPS * MAX_LAYERS)
        input_scales = [cur.unpack("III", f"input scale {i}") for i in range(n)]
    nodes, tower_nodes = [], []
    if minor >= MINOR_NODES:
        nodes = _read_nodes(cur)
        tower_nodes = list(cur.unpack(f"{n_tasks}I", "tower nodes"))
    if cur.left() and minor <= MINOR:
        raise FormatError(f"{cur.left()} trailing metadata bytes (minor {minor})")

    pf = PleFile(major, minor, file_size, meta_size, data_offset, data_size, meta_crc, data_crc, strings, tensors,
                 model_name, flags, features, order, mlps, bottom, n_tasks, levels, towers, outputs,
                 input_scales=input_scales, nodes=nodes, tower_nodes=tower_nodes)
    check_graph(pf)
    if verify_data:
        _check_padding(pf, src)
    return pf


def _read_header(src, verify_data: bool) -> tuple:
    """The 64-byte header (FORMAT.md section 2), checked against the file; both checksums
    (the data's only when `verify_data`)."""
    if src.size < HEADER_SIZE:
        raise FormatError(f"file is {src.size} bytes, shorter than the 64-byte header")
    head = src.read(0, HEADER_SIZE)
    if head[:8] != MAGIC:
        raise FormatError("wrong magic: not a .ple file")
    major, minor, header_size, file_size, meta_offset, meta_size, data_offset, data_size, meta_crc, data_crc = \
        struct.unpack("<HHIQQQQQII", head[8:64])
    if major != MAJOR:
        raise FormatError(f"unsupported format version {major}.{minor} (this reader supports 1.x)")
    if header_size != HEADER_SIZE:
        raise FormatError(f"header_size is {header_size}, expected 64")
    if file_size != src.size:
        raise FormatError(f"file_size field is {file_size} but the file is {src.size} bytes")
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
    got = zlib.crc32(src.read(HEADER_SIZE, meta_size), zlib.crc32(head[:56]))
    if got != meta_crc:
        raise FormatError(f"meta CRC mismatch: header says {meta_crc:#010x}, computed {got:#010x}")
    if any(src.read(HEADER_SIZE + meta_size, data_offset - HEADER_SIZE - meta_size)):
        raise FormatError("non-zero padding between metadata and data")
    if verify_data:
        got = src.crc32(data_offset, file_size)
        if got != data_crc:
            raise FormatError(f"data CRC mismatch: header says {data_crc:#010x}, computed {got:#010x}")
    return major, minor, file_size, meta_size, data_offset, data_size, meta_crc, data_crc


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
            check_string(s, f"string {i}")
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
        unique_name(name, names, what, "tensor")
        _known(dtype, DTYPE_NAMES, what, "dtype")
        _known(layout, LAYOUT_NAMES, what, "layout")
        if reserved:
            raise FormatError(f"{what}: reserved field must be 0")
        if not (1 <= rows < TENSOR_DIM_LIMIT and 1 <= cols < TENSOR_DIM_LIMIT):
            raise FormatError(f"{what}: shape [{rows}, {cols}] must have dimensions in 1..2^31 - 1")
        if (dtype == DTYPE_I8) != (layout == LAYOUT_PANEL16X4):
            raise FormatError(f"{what}: dtype {DTYPE_NAMES[dtype]} with layout {LAYOUT_NAMES[layout]} "
                              f"(i8 goes with panel16x4 and only with it)")
        if layout == LAYOUT_PANEL16X4:
            if size != int8_weight_bytes(rows, cols):
                raise FormatError(f"{what}: size {size} != {int8_weight_bytes(rows, cols)} bytes of "
                                  f"{rows}x{cols} i8 panel16x4")
        else:
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
    n = cur.count("feature count", 32, MAX_FEATURES, minimum=1)
    out, names = [], set()
    for i in range(n):
        name_i, kind, pooling, mask, flags, width, max_len, table, reserved, pad_id = cur.unpack("IBBBBIIIIq", f"feature {i}")
        name = string(name_i, f"feature {i} name")
        what = f"feature {i} ({name!r})"
        unique_name(name, names, what, "feature")
        _known(kind, KIND_NAMES, what, "kind")
        if reserved:
            raise FormatError(f"{what}: reserved field must be 0")
        if flags & ~(FLAG_ID_F32 | FLAG_CALLER_VECTORS) or (kind == KIND_DENSE and flags):
            raise FormatError(f"{what}: flags {flags:#x} not allowed")
        if bool(flags & FLAG_CALLER_VECTORS) != (kind != KIND_DENSE and table == NONE):
            raise FormatError(f"{what}: flag bit 1 (embedding vectors from the caller) must be set exactly when a "
                              f"sparse or sequence feature has no table")
        if kind == KIND_SEQUENCE:
            _known(pooling, POOL_NAMES, what, "pooling")
            _known(mask, MASK_NAMES, what, "mask")
            if not 1 <= max_len <= MAX_LEN:
                raise FormatError(f"{what}: max_len {max_len} is outside 1..{MAX_LEN}")
            if mask == 0 and pad_id != 0:
                raise FormatError(f"{what}: pad_id {pad_id} without mask must be 0")
        else:
            if pooling or mask:
                raise FormatError(f"{what}: pooling/mask on a non-sequence feature")
            if max_len or pad_id:
                raise FormatError(f"{what}: max_len/pad_id on a non-sequence feature")
        if kind == KIND_DENSE:
            if not 1 <= width <= MAX_DENSE_WIDTH:
                raise FormatError(f"{what}: width {width} is outside 1..{MAX_DENSE_WIDTH}")
            if table != NONE:
                raise FormatError(f"{what}: a dense feature has no table (must be NONE)")
        elif table != NONE:
            if table >= len(tensors):
                raise FormatError(f"{what}: table index {table} out of range")
            t = tensors[table]
            if t.layout != LAYOUT_PLAIN or t.cols != width or width < 1:
                raise FormatError(f"{what}: table {t.name!r} is not a plain [vocab, {width}] tensor")
        out.append(FeatureInfo(name, kind, pooling, mask, flags, width, max_len, table, pad_id))
    return out


def _read_mlps(cur: _Cursor) -> list[list[LayerInfo]]:
    n_mlps = cur.count("MLP count", 4 + 20, LIMIT_MLPS)
    mlps = []
    for m in range(n_mlps):
        n_layers = cur.u32(f"mlp {m} n_layers")
        if not 1 <= n_layers <= MAX_LAYERS:
            raise FormatError(f"mlp {m}: {n_layers} layers, expected 1..{MAX_LAYERS}")
        layers = []
        for i in range(n_layers):
            w, bias, act, r0, r1, r2, scalar, param = cur.unpack("IIBBBBfI", f"mlp {m} layer {i}")
            _known(act, ACT_NAMES, f"mlp {m} layer {i}", "activation code")
            if r0 or r1 or r2:
                raise FormatError(f"mlp {m} layer {i}: reserved bytes must be 0")
            layers.append(LayerInfo(w, bias, act, scalar, param))
        mlps.append(layers)
    return mlps


def _read_levels(cur: _Cursor) -> tuple[int, int, list[LevelInfo]]:
    """The structure's head (bottom, task count) and its levels."""
    bottom, n_tasks, n_levels = cur.unpack("III", "structure header")
    if not 1 <= n_tasks <= MAX_TASKS:
        raise FormatError(f"n_tasks {n_tasks} is outside 1..{MAX_TASKS}")
    if n_levels > MAX_LEVELS:
        raise FormatError(f"n_levels {n_levels} is over {MAX_LEVELS}")
    levels = []
    for li in range(n_levels):
        s, sh = cur.unpack("II", f"level {li} counts")
        if n_tasks * s + sh > MAX_EXPERTS_PER_LEVEL:
            raise FormatError(f"level {li}: {n_tasks * s + sh} experts, over {MAX_EXPERTS_PER_LEVEL}")
        k = n_tasks * s + sh + n_tasks + 1
        idx = cur.unpack(f"{k}I", f"level {li} indices")
        levels.append(LevelInfo(s, sh, list(idx[:n_tasks * s]), list(idx[n_tasks * s:n_tasks * s + sh]),
                                list(idx[n_tasks * s + sh:n_tasks * s + sh + n_tasks]), idx[-1]))
    return bottom, n_tasks, levels


def _read_towers(cur: _Cursor, n_tasks: int) -> list[TowerInfo]:
    towers = []
    for t in range(n_tasks):
        mlp, inp, act, reserved = cur.unpack("IBBH", f"tower {t}")
        _known(inp, TOWER_INPUT_NAMES, f"tower {t}", "tower input code")
        _known(act, TOWER_ACT_NAMES, f"tower {t}", "output activation code")
        if reserved:
            raise FormatError(f"tower {t}: reserved field must be 0")
        towers.append(TowerInfo(mlp, inp, act))
    return towers


def _read_nodes(cur: _Cursor) -> list[NodeInfo]:
    """The node section (FORMAT.md 3.10, format 1.3)."""
    nodes = []
    for i in range(cur.count("node count", 16, MAX_NODES)):
        what = f"node {i}"
        op, r0, r1, r2, n_in = cur.unpack("BBBBI", what)
        _known(op, NODE_OP_NAMES, what, "node op")
        if r0 or r1 or r2:
            raise FormatError(f"{what}: reserved bytes must be 0")
        want = "1" if op == NODE_MLP else f"1..{MAX_NODE_INPUTS}"
        if n_in < 1 or n_in > (1 if op == NODE_MLP else MAX_NODE_INPUTS):
            raise FormatError(f"{what} ({NODE_OP_NAMES[op]}) has {n_in} inputs, must be {want}")
        inputs = []
        for j in range(n_in):
            src, q0, q1, q2, index = cur.unpack("BBBBI", f"{what} input {j}")
            _known(src, TOWER_INPUT_NAMES, f"{what} input {j}", "tower input code")
            if q0 or q1 or q2:
                raise FormatError(f"{what} input {j}: reserved bytes must be 0")
            inputs.append((src, index))
        n_mlps = 1 if op == NODE_MLP else 3
        mlps = list(cur.unpack(f"{n_mlps}I", f"{what} MLPs"))
        (temperature,) = cur.unpack("f", f"{what} temperature")
        nodes.append(NodeInfo(op, inputs, mlps, temperature))
    return nodes


def _read_outputs(cur: _Cursor, string) -> list[OutputInfo]:
    n_out = cur.count("n_outputs", 16, MAX_OUTPUTS, minimum=1)
    outputs = []
    for o in range(n_out):
        name, kind, r0, r1, r2, a, b = cur.unpack("IBBBBII", f"output {o}")
        _known(kind, OUTPUT_KIND_NAMES, f"output {o}", "output kind")
        if r0 or r1 or r2:
            raise FormatError(f"output {o}: reserved bytes must be 0")
        outputs.append(OutputInfo(string(name, f"output {o} name"), kind, a, b))
    return outputs


def _check_padding(pf: PleFile, src) -> None:
    """Padding after each tensor, and panel16 columns past n, must be zero (reads only those
    bytes: the padding, and the last panel of a panel16 tensor whose n is not a multiple of 16);
    int8 weights and input scales are read whole and checked."""
    scale_tensors = {t for _, _, t in pf.input_scales}
    for i, t in enumerate(pf.tensors):
        end = t.offset + t.size
        nxt = pf.tensors[i + 1].offset if i + 1 < len(pf.tensors) else pf.data_size
        if any(src.read(pf.data_offset + end, nxt - end)):
            raise FormatError(f"tensor {i} ({t.name!r}): non-zero padding after the tensor")
        if t.layout == LAYOUT_PANEL16X4:
            problem = int8_problem(np.frombuffer(src.read(pf.data_offset + t.offset, t.size), dtype=np.uint8),
                                   t.rows, t.cols)
            if problem:
                raise FormatError(f"tensor {i} ({t.name!r}): {problem}")
        if i in scale_tensors:
            r = np.frombuffer(src.read(pf.data_offset + t.offset, t.size), dtype="<f4")
            bad = np.flatnonzero(~(np.isfinite(r) & (r > 0)))
            if bad.size:
                raise FormatError(f"tensor {i} ({t.name!r}): input scale of column {bad[0]} is {r[bad[0]]}, "
                                  f"not finite and > 0")
        if t.layout == LAYOUT_PANEL16 and t.cols % 16:
            panel = t.rows * 16 * ELEMENT_SIZE[t.dtype]
            dt = np.dtype("<f4") if t.dtype == DTYPE_F32 else np.dtype("<f2")
            last = np.frombuffer(src.read(pf.data_offset + end - panel, panel), dtype=dt).reshape(t.rows, 16)
            if np.any(last[:, t.cols % 16:] != 0):
                raise FormatError(f"tensor {i} ({t.name!r}): non-zero panel16 padding past column {t.cols}")


def tensor_array(pf: PleFile, data: bytes, index: int, logical: bool = True) -> np.ndarray:
    """Tensor `index` from the data section as stored (f32 or f16); panel16 unpacked to
    its logical [k, n] matrix when `logical`."""
    t = pf.tensors[index]
    if t.layout == LAYOUT_PANEL16X4:
        raw = np.frombuffer(data, dtype=np.uint8, count=t.size, offset=t.offset)
        if not logical:
            return raw
        codes, scales, _ = unpack_int8(raw, t.rows, t.cols)
        return codes.astype(np.float64) * scales.astype(np.float64)
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


def read_spec(path: str | os.PathLike) -> dict:
    """The spec a file stores: its graph with every tensor widened to float64, BatchNorm
    already folded (``bn`` None), weights in ``[in, out]`` layout and Dice's BatchNorm
    as ``gamma = scale, beta = shift, mean = 0, var = 1, eps = 0``, which computes exactly
    ``x * scale + shift``. Scoring it with :func:`ple_runtime.reference.forward` scores
    the file as stored (rounded weights, f16 tables, ...). Holds every tensor in float64:
    meant for test-sized models."""
    pf, arrays = read_tensors(path)
    t = [arrays[info.name].astype(np.float64) for info in pf.tensors]

    def vector(idx: int) -> np.ndarray:
        return t[idx].reshape(-1)

    scales = {(m, i): vector(r) for m, i, r in pf.input_scales}

    def layer(rec: LayerInfo, where: tuple[int, int]) -> dict:
        act = ACT_NAMES[rec.act]
        weight = t[rec.weight]
        if where in scales:  # stored as diag(1/r)·W
            weight = weight * scales[where][:, None]
        out = {"weight": weight, "weight_layout": "in_out",
               "bias": None if rec.bias == NONE else vector(rec.bias), "activation": act}
        if act == "leaky_relu":
            out["slope"] = float(rec.act_scalar)
        elif act == "prelu":
            out["prelu_weight"] = vector(rec.act_param)
        elif act == "dice_rechub":
            out["dice_alpha"], out["dice_eps"] = vector(rec.act_param), float(rec.act_scalar)
        elif act == "dice_bn":
            scale, shift, alpha = t[rec.act_param]
            n = scale.shape[0]
            out["dice_alpha"] = alpha
            out["dice_bn"] = {"gamma": scale, "beta": shift, "mean": np.zeros(n), "var": np.ones(n), "eps": 0.0}
        return out

    def mlp(m: int) -> list[dict]:
        return [layer(rec, (m, i)) for i, rec in enumerate(pf.mlps[m])]

    def feature(f: FeatureInfo) -> dict:
        out = {"name": f.name, "kind": KIND_NAMES[f.kind]}
        if f.kind == KIND_DENSE:
            return {**out, "width": f.width}
        if f.table == NONE:  # no table in the file: the caller passes vectors
            out.update(table=None, vectors=True, width=f.width, id_f32=bool(f.flags & FLAG_ID_F32))
        else:
            out.update(table=pf.tensors[f.table].name, id_f32=bool(f.flags & FLAG_ID_F32))
        if f.kind == KIND_SEQUENCE:
            out.update(max_len=f.max_len, pooling=POOL_NAMES[f.pooling],
                       pad_id=f.pad_id if f.mask == MASK_PAD_ID else None)
        return out

    def source(ref: tuple[int, int]):
        name = TOWER_INPUT_NAMES[ref[0]]
        return name if name in ("x0", "bottom") else [name, ref[1]]

    def node(n: NodeInfo) -> dict:
        if n.op == NODE_MLP:
            return {"op": "mlp", "input": source(n.inputs[0]), "mlp": mlp(n.mlps[0])}
        return {"op": "attention", "inputs": [source(r) for r in n.inputs], "query": mlp(n.mlps[0]),
                "key": mlp(n.mlps[1]), "value": mlp(n.mlps[2]), "temperature": float(n.temperature)}

    def tower(t: int, tw: TowerInfo) -> dict:
        out = {"mlp": mlp(tw.mlp), "input": TOWER_INPUT_NAMES[tw.input], "activation": TOWER_ACT_NAMES[tw.out_act]}
        if out["input"] == "node":
            out["node"] = pf.tower_nodes[t]
        return out

    T = pf.n_tasks
    levels = [{"task_experts": [[mlp(m) for m in lv.task_experts[task * lv.n_task_experts:(task + 1) * lv.n_task_experts]]
                                for task in range(T)],
               "shared_experts": [mlp(m) for m in lv.shared_experts],
               "task_gates": [mlp(m) for m in lv.task_gates],
               "shared_gate": None if lv.shared_gate == NONE else mlp(lv.shared_gate)} for lv in pf.levels]
    return {
        "name": pf.name,
        "features": [feature(f) for f in pf.features],
        "tables": {pf.tensors[f.table].name: t[f.table] for f in pf.features if f.kind != KIND_DENSE and f.table != NONE},
        "x0_order": [pf.features[i].name for i in pf.order],
        "bottom": None if pf.bottom == NONE else mlp(pf.bottom),
        "levels": levels,
        "nodes": [node(n) for n in pf.nodes],
        "towers": [tower(t, tw) for t, tw in enumerate(pf.towers)],
        "outputs": [{"name": o.name, "tower": o.a} if o.kind == OUTPUT_TOWER else {"name": o.name, "product": [o.a, o.b]}
                    for o in pf.outputs],
    }
