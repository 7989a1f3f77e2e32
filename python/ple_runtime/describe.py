"""A human-readable summary of a parsed ``.ple`` file (``python -m ple_runtime inspect``)."""

from __future__ import annotations

from .codes import (
    DTYPE_NAMES,
    FLAG_ID_F32, KIND_DENSE, KIND_NAMES, KIND_SEQUENCE, MASK_PAD_ID, NODE_MLP, NODE_OP_NAMES, NONE, OUTPUT_TOWER,
    POOL_NAMES, TOWER_ACT_NAMES, TOWER_INPUT_NAMES,
)
from .reader import PleFile


def describe(pf: PleFile) -> str:
    """A human-readable summary of a parsed file (for ``python -m ple_runtime inspect``)."""
    feats = []
    for f in pf.features:
        extra = ""
        if f.kind != KIND_DENSE:
            extra = f" table={pf.tensors[f.table].name}" if f.table != NONE else f" no table (vectors, width {f.width})"
        if f.kind == KIND_SEQUENCE:
            extra += f" max_len={f.max_len} pooling={POOL_NAMES[f.pooling]}"
            extra += f" pad_id={f.pad_id}" if f.mask == MASK_PAD_ID else " mask=none"
        if f.flags & FLAG_ID_F32:
            extra += " ids-via-f32"
        feats.append(f"  {f.name}: {KIND_NAMES[f.kind]} width={f.width}{extra}")
    lines = [
        f"{pf.name}: .ple {pf.major}.{pf.minor}, {pf.file_size} bytes (meta {pf.meta_size}, data {pf.data_size})",
        f"tensors: {len(pf.tensors)} ({sum(t.size for t in pf.tensors)} bytes), mlps: {len(pf.mlps)}",
        _layer_precisions(pf),
        "features:", *feats,
        "x0 order: " + ", ".join(pf.features[i].name for i in pf.order) + f" (width {pf.x0_width})",
        f"bottom: {'none' if pf.bottom == NONE else f'mlp {pf.bottom}'}; tasks: {pf.n_tasks}; levels: {len(pf.levels)}",
    ]
    for li, lv in enumerate(pf.levels):
        lines.append(f"  level {li}: S={lv.n_task_experts} SH={lv.n_shared} "
                     f"shared gate={'yes' if lv.shared_gate != NONE else 'no'}")
    for i, node in enumerate(pf.nodes):
        reads = ", ".join(TOWER_INPUT_NAMES[src] + (f" {idx}" if TOWER_INPUT_NAMES[src] in ("level", "node") else "")
                          for src, idx in node.inputs)
        if node.op == NODE_MLP:
            lines.append(f"  node {i}: mlp {node.mlps[0]} reads {reads}")
        else:
            lines.append(f"  node {i}: {NODE_OP_NAMES[node.op]} over [{reads}] query/key/value mlps "
                         f"{'/'.join(map(str, node.mlps))} temperature={node.temperature:g}")
    for t, tw in enumerate(pf.towers):
        source = TOWER_INPUT_NAMES[tw.input]
        if source == "node":
            source += f" {pf.tower_nodes[t]}"
        lines.append(f"  tower {t}: mlp {tw.mlp} input={source} "
                     f"out_act={TOWER_ACT_NAMES[tw.out_act]}")
    lines.append("outputs: " + ", ".join(o.name if o.kind == OUTPUT_TOWER else f"{o.name}=tower{o.a}*tower{o.b}"
                                         for o in pf.outputs) + f" (width {pf.output_width}, gates {pf.gate_width})")
    return "\n".join(lines)


def _layer_precisions(pf) -> str:
    """`dense layers: 9 f32, 8 i8 (i8: l0.t0.e0.1, ...)`: how many layers each precision holds
    and, when they differ, which layers are not f32."""
    dtypes = [(pf.tensors[rec.weight].name, DTYPE_NAMES[pf.tensors[rec.weight].dtype])
              for layers in pf.mlps for rec in layers]
    counts = {d: sum(1 for _, x in dtypes if x == d) for d in dict.fromkeys(x for _, x in dtypes)}
    text = "dense layers: " + ", ".join(f"{n} {d}" for d, n in counts.items())
    if len(counts) > 1:
        for d in counts:
            if d != "f32":
                names = [name[:-2] if name.endswith(".w") else name for name, x in dtypes if x == d]
                text += f" ({d}: {', '.join(names)})"
    if pf.input_scales:
        vectors = len({r for _, _, r in pf.input_scales})
        text += f"; input scales on {len(pf.input_scales)} i8 layers ({vectors} vector{'s' * (vectors != 1)})"
    return text
