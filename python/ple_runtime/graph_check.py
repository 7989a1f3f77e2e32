"""The graph rules of a parsed ``.ple`` file (docs/FORMAT.md 3.6-3.8): every index in
range, every MLP used exactly once, widths that agree, parameter tensors of the right shape
and dtype, the per-sample working size under its cap.

It checks a file from any writer, so it works on the file's records, not on a spec
(:func:`ple_runtime.spec.normalize` checks a spec before it is written); the Rust reader's
``src/model/graph.rs`` applies the same rules.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .codes import (
    ACT_CODES, ACT_NAMES, DTYPE_F16, DTYPE_F32, DTYPE_I8, DTYPE_NAMES, KIND_DENSE, LAYOUT_NAMES, LAYOUT_PANEL16, LAYOUT_PANEL16X4,
    LAYOUT_PLAIN,
    MAX_WORKING_FLOATS, NODE_MLP, NODE_OP_NAMES, NONE, OUTPUT_PRODUCT, TOWER_INPUT_NAMES, FormatError,
)

if TYPE_CHECKING:
    from .reader import PleFile, TensorInfo


def unique_name(name: str, seen: set[str], what: str, record: str) -> None:
    """Refuse a second record of the same kind with the same name; remember this one."""
    if name in seen:
        raise FormatError(f"{what}: duplicate {record} name")
    seen.add(name)


def check_graph(pf: PleFile) -> None:
    """FORMAT.md section 3.7's structural rules plus the layer and dtype rules; sets the
    file's x0, output and gate widths."""
    tensors = pf.tensors
    table_use = {f.table for f in pf.features if f.kind != KIND_DENSE}
    for i, t in enumerate(tensors):
        if t.dtype == DTYPE_F16 and t.layout == LAYOUT_PLAIN and i not in table_use:
            raise FormatError(f"tensor {i} ({t.name!r}): f16 where only f32 is allowed")
    widths = [_mlp_widths(pf, m) for m in range(len(pf.mlps))]
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
    level_widths = []
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
        level_widths.append(k)
    node_w: list[int] = []
    node_read: list[bool] = []

    def value(source: int, index: int, what: str) -> int:
        """The width of a value a node or tower reads (FORMAT.md 3.10)."""
        name = TOWER_INPUT_NAMES[source]
        if name in ("x0", "bottom") and index != 0:
            raise FormatError(f"{what}: reads {name} with index {index}, which must be 0")
        if name == "level" and not pf.levels:
            raise FormatError(f"{what}: reads the last level but there are no levels")
        if name == "level" and index >= T:
            raise FormatError(f"{what}: reads task {index}'s level output, but there are {T} tasks")
        if name == "bottom" and pf.bottom == NONE:
            raise FormatError(f"{what}: reads the bottom but there is no bottom")
        if name == "node":
            if index >= len(node_w):
                raise FormatError(f"{what}: reads node {index}, which does not come before it")
            node_read[index] = True
            return node_w[index]
        return {"x0": x0, "bottom": h, "level": k}[name]

    extra = 0  # working floats of attention nodes beyond their MLPs' single pass
    for i, node in enumerate(pf.nodes):
        what = f"node {i} ({NODE_OP_NAMES[node.op]})"
        widths_in = {value(src, idx, f"{what} input {j}") for j, (src, idx) in enumerate(node.inputs)}
        if len(widths_in) != 1:
            raise FormatError(f"{what}: inputs of different widths {sorted(widths_in)}")
        d = widths_in.pop()
        if node.op == NODE_MLP:
            if node.temperature != 0 or math.copysign(1.0, node.temperature) < 0:
                raise FormatError(f"{what}: the scalar field must be 0")
            node_w.append(use(node.mlps[0], what, d))
        else:
            if not (math.isfinite(node.temperature) and node.temperature > 0):
                raise FormatError(f"{what}: temperature {node.temperature} must be finite and positive")
            q, kk, v = (use(m, f"{what} {role}", d) for m, role in zip(node.mlps, ("query", "key", "value")))
            if q != kk:
                raise FormatError(f"{what}: queries are {q} wide but keys {kk}")
            n = len(node.inputs)
            per_input = sum(tensors[layer.weight].cols for m in node.mlps for layer in pf.mlps[m])
            extra += (n - 1) * per_input + n + v
            node_w.append(v)
        node_read.append(False)
    tower_w = []
    for t, tw in enumerate(pf.towers):
        what = f"tower {t}"
        node = pf.tower_nodes[t] if pf.tower_nodes else NONE
        is_node = TOWER_INPUT_NAMES[tw.input] == "node"
        if is_node != (node != NONE):
            raise FormatError(f"{what}: reads {TOWER_INPUT_NAMES[tw.input]} but its node entry is "
                              f"{'NONE' if node == NONE else node}")
        index = node if is_node else t if TOWER_INPUT_NAMES[tw.input] == "level" else 0
        tower_w.append(use(tw.mlp, what, value(tw.input, index, what)))
    if False in node_read:
        raise FormatError(f"node {node_read.index(False)} is not read by a later node or a tower")
    _check_coverage(pf, used)
    names = set()
    out_w = 0
    for o, out in enumerate(pf.outputs):
        what = f"output {o} ({out.name!r})"
        unique_name(out.name, names, what, "output")
        product = out.kind == OUTPUT_PRODUCT
        if out.a >= T or (product and out.b >= T):
            raise FormatError(f"{what}: tower index out of range")
        if not product and out.b != NONE:
            raise FormatError(f"{what}: b must be NONE for a tower output")
        if product and tower_w[out.a] != tower_w[out.b]:
            raise FormatError(f"{what}: product of towers of different widths")
        out_w += tower_w[out.a]
    layer_outputs = sum(tensors[layer.weight].cols for layers in pf.mlps for layer in layers)
    mixtures = sum(width * (T + (lv.shared_gate != NONE)) for width, lv in zip(level_widths, pf.levels))
    products = sum(tower_w[out.a] for out in pf.outputs if out.kind == OUTPUT_PRODUCT)
    work = x0 + layer_outputs + mixtures + products + extra
    if work > MAX_WORKING_FLOATS:
        raise FormatError(f"per-sample working size {work} floats is over the cap {MAX_WORKING_FLOATS}")
    pf.x0_width = x0
    pf.output_width = out_w
    pf.gate_width = sum(T * (lv.n_task_experts + lv.n_shared)
                        + (T * lv.n_task_experts + lv.n_shared if lv.shared_gate != NONE else 0) for lv in pf.levels)


def _mlp_widths(pf: PleFile, m: int) -> tuple[int, int]:
    """(k, n) of MLP `m` after checking its layers: panel16 weights whose widths chain, f32
    biases and activation parameters of the right shape (FORMAT.md 3.6)."""
    tensors = pf.tensors

    def vector(idx: int, rows: int, cols: tuple, what: str) -> TensorInfo:
        if idx >= len(tensors):
            raise FormatError(f"{what}: tensor index {idx} out of range")
        t = tensors[idx]
        if t.dtype != DTYPE_F32 or t.layout != LAYOUT_PLAIN or t.rows != rows or t.cols not in cols:
            raise FormatError(f"{what}: tensor {t.name!r} must be f32 plain [{rows}, {' or '.join(map(str, cols))}], "
                              f"is {DTYPE_NAMES[t.dtype]} {LAYOUT_NAMES[t.layout]} [{t.rows}, {t.cols}]")
        return t

    k_prev = None
    for i, layer in enumerate(pf.mlps[m]):
        what = f"mlp {m} layer {i}"
        if layer.weight >= len(tensors):
            raise FormatError(f"{what}: weight index {layer.weight} out of range")
        w = tensors[layer.weight]
        if w.layout not in (LAYOUT_PANEL16, LAYOUT_PANEL16X4):
            raise FormatError(f"{what}: weight {w.name!r} is not panel16 or panel16x4")
        if k_prev is not None and w.rows != k_prev:
            raise FormatError(f"{what}: weight {w.name!r} reads {w.rows} inputs, previous layer gives {k_prev}")
        n = w.cols
        if layer.bias != NONE:
            vector(layer.bias, 1, (n,), f"{what} bias")
        act = ACT_NAMES[layer.act]
        if not math.isfinite(layer.act_scalar):
            raise FormatError(f"{what}: non-finite act_scalar")
        if act not in ("leaky_relu", "dice_rechub") and layer.act_scalar != 0:
            raise FormatError(f"{what}: act_scalar must be 0 for {act}")
        if act == "dice_rechub" and not layer.act_scalar > 0:
            raise FormatError(f"{what}: dice eps must be positive")
        if act == "prelu":
            vector(layer.act_param, 1, (1, n), f"{what} prelu parameter")
        elif act == "dice_rechub":
            vector(layer.act_param, 1, (1,), f"{what} dice alpha")
        elif act == "dice_bn":
            vector(layer.act_param, 3, (n,), f"{what} dice parameters")
        elif layer.act_param != NONE:
            raise FormatError(f"{what}: {act} takes no act_param")
        k_prev = n
    return tensors[pf.mlps[m][0].weight].rows, k_prev


def _check_coverage(pf: PleFile, used_mlps: set[int]) -> None:
    """Every MLP belongs to the structure and every tensor to the graph (no hidden data)."""
    unused = sorted(set(range(len(pf.mlps))) - used_mlps)
    if unused:
        raise FormatError(f"mlp {unused[0]} is not used by the structure")
    referenced = {f.table for f in pf.features if f.kind != KIND_DENSE}
    for layers in pf.mlps:
        for layer in layers:
            referenced |= {layer.weight, layer.bias, layer.act_param}
    referenced |= _check_input_scales(pf)
    for i, t in enumerate(pf.tensors):
        if i not in referenced:
            raise FormatError(f"tensor {i} ({t.name!r}) is not used by the graph (no unreferenced data is allowed)")


def _check_input_scales(pf: PleFile) -> set[int]:
    """The input-scales section (format 1.2): each record names an existing i8 layer at most once
    and an f32 plain [1, k] tensor (its values are checked with the data). Returns the tensors."""
    seen, tensors = set(), set()
    for i, (m, j, r) in enumerate(pf.input_scales):
        what = f"input scale {i} (mlp {m} layer {j})"
        if m >= len(pf.mlps) or j >= len(pf.mlps[m]):
            raise FormatError(f"{what}: no such layer")
        w = pf.tensors[pf.mlps[m][j].weight]
        if w.dtype != DTYPE_I8:
            raise FormatError(f"{what}: the layer is {DTYPE_NAMES[w.dtype]}; input scales are for i8 layers only")
        if (m, j) in seen:
            raise FormatError(f"{what}: the layer has input scales already")
        seen.add((m, j))
        if r >= len(pf.tensors):
            raise FormatError(f"{what}: tensor index {r} out of range")
        t = pf.tensors[r]
        if t.dtype != DTYPE_F32 or t.layout != LAYOUT_PLAIN or t.rows != 1 or t.cols != w.rows:
            raise FormatError(f"{what}: tensor {t.name!r} must be f32 plain [1, {w.rows}], "
                              f"is {DTYPE_NAMES[t.dtype]} {LAYOUT_NAMES[t.layout]} [{t.rows}, {t.cols}]")
        tensors.add(r)
    return tensors
