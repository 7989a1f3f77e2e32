"""The Python package and the Rust reader/writer agree on the format.

``tests/cross_writer/`` holds, committed: ``codes.txt`` (every code, constant and limit of
FORMAT.md) and ``f32.ple`` / ``f16.ple``, a model that uses every code, written by this
package from :func:`cross_spec`. ``tests/cross_writer.rs`` builds the same model with the
Rust test kit's writer and requires the same bytes, and the Rust code table to print as
``codes.txt``; this test requires the same of the Python package. Neither test needs the
other language, so ``cargo test`` stays free of Python.

Regenerate after a deliberate format change (then both tests must pass again):
    PLE_REGEN_CROSS_WRITER=1 python -m pytest python/tests/test_cross_writer.py
"""

import os

import numpy as np
import pytest

from ple_runtime import codes
from ple_runtime import format as fmt

DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tests", "cross_writer")
REGEN = os.environ.get("PLE_REGEN_CROSS_WRITER") == "1"


def values(name: str, n: int) -> np.ndarray:
    """n deterministic values for the tensor `name`: multiples of 1/16 in [-0.5, 0.5], exact in
    f16 and f32, so both writers store the same bits whatever they round with. The Rust test
    computes the same (tests/cross_writer.rs)."""
    salt = sum(name.encode())
    return np.array([((i * 7 + salt) % 17 - 8) / 16 for i in range(n)])


def dense(prefix: str, out: int, inp: int, act: str = "identity", bias: bool = True, **params) -> dict:
    """Layer `prefix` (tensor names ``<prefix>.w``, ``.b``, ``.a`` as the writer names them)."""
    layer = {"weight": values(prefix + ".w", out * inp).reshape(out, inp),
             "bias": values(prefix + ".b", out) if bias else None, "activation": act}
    return {**layer, **params}


def cross_spec() -> dict:
    """Three tasks, two levels, a bottom, graph nodes (format 1.3: an MLP node on x0, one on a
    level output, an attention node over both); every feature kind, pooling and mask, the id-f32
    flag, a shared table, every activation (PReLU scalar and per channel), every tower input
    (towers and node inputs) and output activation, both output kinds, both node ops, bias
    present and absent, a 2-panel weight."""
    a = "l1.t2.e0.0.a"  # the dice_bn layer's parameter tensor
    dice_bn = {"gamma": values(a + ".gamma", 5), "beta": values(a + ".beta", 5), "mean": values(a + ".mean", 5),
               "var": np.full(5, 0.75), "eps": 0.25}  # sqrt(var + eps) = 1: scale and shift stay exact
    level0 = {
        "task_experts": [[[dense("l0.t0.e0.0", 6, 8, "relu")]], [[dense("l0.t1.e0.0", 6, 8, "tanh")]],
                         [[dense("l0.t2.e0.0", 6, 8, "sigmoid", bias=False)]]],
        "shared_experts": [[dense("l0.s.e0.0", 6, 8, "prelu", prelu_weight=values("l0.s.e0.0.a", 6))]],
        "task_gates": [[dense(f"l0.t{t}.g.0", 2, 8)] for t in range(3)],
        "shared_gate": [dense("l0.s.g.0", 4, 8, bias=False)],
    }
    level1 = {
        "task_experts": [[[dense("l1.t0.e0.0", 5, 6, "prelu", prelu_weight=values("l1.t0.e0.0.a", 1))]],
                         [[dense("l1.t1.e0.0", 5, 6, "dice_rechub", dice_alpha=values("l1.t1.e0.0.a", 1),
                                 dice_eps=1e-3)]],
                         [[dense("l1.t2.e0.0", 5, 6, "dice_bn", dice_alpha=values(a + ".alpha", 5), dice_bn=dice_bn)]]],
        "shared_experts": [[dense("l1.s.e0.0", 5, 6, "softmax")]],
        "task_gates": [[dense(f"l1.t{t}.g.0", 2, 6)] for t in range(3)],
        "shared_gate": None,
    }
    return {
        "name": "cross",
        "features": [
            {"name": "price", "kind": "dense", "width": 2},
            {"name": "user", "kind": "sparse", "table": "user"},
            {"name": "item", "kind": "sparse", "table": "item", "id_f32": True},
            {"name": "hist", "kind": "sequence", "table": "item", "max_len": 3, "pooling": "sum", "pad_id": 0},
            {"name": "tags", "kind": "sequence", "table": "tag", "max_len": 2, "pooling": "mean", "pad_id": None},
            {"name": "cats", "kind": "sequence", "table": "tag", "max_len": 4, "pooling": "max", "pad_id": 0},
        ],
        "tables": {t: values(f"table.{t}", v * 4).reshape(v, 4) for t, v in (("user", 6), ("item", 7), ("tag", 5))},
        "x0_order": ["user", "item", "hist", "tags", "cats", "price"],
        "bottom": [dense("bottom.0", 18, 22, "relu"), dense("bottom.1", 8, 18, "leaky_relu", bias=False, slope=0.25)],
        "levels": [level0, level1],
        "nodes": [
            {"op": "mlp", "input": "x0", "mlp": [dense("node0.0", 4, 22, "relu")]},
            {"op": "mlp", "input": ["level", 2], "mlp": [dense("node1.0", 4, 5, "tanh")]},
            {"op": "attention", "inputs": [["node", 0], ["node", 1]], "temperature": 1.5,
             "query": [dense("node2.query.0", 3, 4, bias=False)], "key": [dense("node2.key.0", 3, 4)],
             "value": [dense("node2.value.0", 2, 4)]},
        ],
        "towers": [
            {"mlp": [dense("tower0.0", 4, 5, "relu"), dense("tower0.1", 1, 4)], "input": "level", "activation": "sigmoid"},
            {"mlp": [dense("tower1.0", 1, 8)], "input": "bottom", "activation": "identity"},
            {"mlp": [dense("tower2.0", 1, 2, bias=False)], "input": "node", "node": 2, "activation": "sigmoid"},
        ],
        "outputs": [{"name": "ctr", "tower": 0}, {"name": "cvr", "tower": 1}, {"name": "aux", "tower": 2},
                    {"name": "ctcvr", "product": [0, 1]}],
    }


def _check(name: str, produced: bytes) -> None:
    path = os.path.join(DIR, name)
    if REGEN:
        os.makedirs(DIR, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(produced)
    with open(path, "rb") as fh:
        committed = fh.read()
    assert produced == committed, f"{name}: the Python package no longer writes tests/cross_writer/{name}"


def test_code_table_matches_the_committed_one():
    _check("codes.txt", codes.table().encode())


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_writer_bytes_match_the_committed_file(dtype):
    _check(f"{dtype}.ple", fmt.to_bytes(cross_spec(), dtype=dtype))


def test_the_file_uses_every_code():
    pf = fmt.parse(fmt.to_bytes(cross_spec(), dtype="f16"))
    f32 = fmt.parse(fmt.to_bytes(cross_spec()))
    # i8 and panel16x4 come from an int8 file (not committed: the Rust test kit's quantizer rounds
    # in f32, this one in float64, so their bytes need not agree); one layer forced to int8.
    first_weight = next(t.name[:-2] for t in f32.tensors if t.name.endswith(".w"))
    i8 = fmt.parse(fmt.to_bytes(cross_spec(), dtype="int8", precision={first_weight: "int8"}))
    assert {t.dtype for t in pf.tensors + i8.tensors} == set(codes.DTYPE_CODES.values())
    assert {t.layout for t in pf.tensors + i8.tensors} == set(codes.LAYOUT_CODES.values())
    assert {f.kind for f in pf.features} == set(codes.KIND_CODES.values())
    assert {f.pooling for f in pf.features} - {0} == set(codes.POOL_CODES.values())
    assert {f.mask for f in pf.features} == set(codes.MASK_CODES.values())
    assert {f.flags for f in pf.features} == {0, codes.FLAG_ID_F32}
    assert {lay.act for layers in pf.mlps for lay in layers} == set(codes.ACT_CODES.values())
    sources = {t.input for t in pf.towers} | {src for n in pf.nodes for src, _ in n.inputs}
    assert sources == set(codes.TOWER_INPUT_CODES.values())
    assert {n.op for n in pf.nodes} == set(codes.NODE_OP_CODES.values())
    assert {t.out_act for t in pf.towers} == set(codes.TOWER_ACT_CODES.values())
    assert {o.kind for o in pf.outputs} == set(codes.OUTPUT_KIND_CODES.values())
    assert max(t.cols for t in pf.tensors if t.layout == codes.LAYOUT_PANEL16) > 16
    assert [t.name for t in pf.tensors] == [t.name for t in f32.tensors]
