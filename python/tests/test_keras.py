"""Parity with DeepCTR 0.9.4 on TensorFlow (tf-keras), scored by libple through ple_runtime.Model.

Every case is a real DeepCTR Keras model (deepctr.models.multitask PLE / MMOE / SharedBottom /
ESMM, tensorflow-cpu 2.21 + tf-keras 2.21) with every weight and BatchNormalization statistic
randomised (_keras_models.randomize), exported with ple_runtime.export straight from the live
model, scored by libple and by ``model.predict`` on the same 256 random inputs (sequences with
padding and all-padding rows). The gate weights are compared with the model's own softmax gate
outputs.

Required, per case (as test_parity.py requires of the torch libraries):
  f32: max |ours - keras| / max(1, |keras|) <= 1e-5 for the outputs and the gate weights;
  f16: the f16 file within 1e-5 of the f32 file holding the same f16-rounded weights, and its
       error against Keras at most 3x the error that storing the Keras model's own weights in
       f16 causes (the larger of round-to-nearest and the mean of 4 stochastic roundings;
       ple_runtime.export_keras.f16_error), over the rows without an all-padding max-pooled
       sequence (ple_runtime.verify.f16_rows).
The worst errors are printed at the end of the run and written to
python/tests/parity_report_keras.txt (conftest.py).

The matrix (CASES): PLE x {relu, sigmoid, tanh, linear, dice, PReLU, LeakyReLU} x BatchNorm
{off, on}, cycling 1-3 levels, 0-3 specific and 1-3 shared experts (SH > S too), expert widths
(8, 6) / (6,) / (7, 5, 4), towers (3,) / (4, 2) / (), gate DNNs () / (4,), 2-3 tasks mixing
binary and regression, dropout and L2; MMOE (softmax and PReLU hidden activations), SharedBottom
(sigmoid, the ReLU layer class) and ESMM (relu, dice), each with BatchNorm off and on. Inputs
(_keras_models.columns): dense features listed first, sparse ids fed as int32 / int64 / float32,
sequences with sum / mean / max pooling, a sequence sharing a SparseFeat's table, and group_name
grouping that reorders the input vector.
"""

from __future__ import annotations

import functools
import os
import zlib

import numpy as np
import pytest

try:
    import _keras_models as km
except ImportError as exc:
    if os.environ.get("PLE_REQUIRE_TF") == "1":
        raise
    pytest.skip(f"tensorflow / tf-keras / deepctr not usable: {exc}", allow_module_level=True)

import ple_runtime  # noqa: E402
from _util import KERAS_PARITY, check_f16, check_f32  # noqa: E402
from ple_runtime import export_keras  # noqa: E402

BATCH = int(os.environ.get("PLE_PARITY_BATCH", "256"))

ACTS = ["relu", "sigmoid", "tanh", "linear", "dice", "prelu", "leakyrelu"]
# (levels, specific experts S, shared experts SH) cycled over the activations
PLE_SHAPES = [(1, 1, 1), (2, 2, 1), (3, 1, 2), (2, 3, 3), (1, 2, 3), (3, 2, 1), (2, 1, 2)]
EXPERT_DIMS = [(8, 6), (6,), (7, 5, 4)]
TOWER_DIMS = [(3,), (4, 2), ()]
TASKS = [("ctr", "binary"), ("dwell", "regression"), ("cvr", "binary")]


def ple(i, act, bn):
    L, S, SH = PLE_SHAPES[i]
    n_tasks = [2, 3][i % 2]
    names = [TASKS[(t + i) % 3][0] for t in range(n_tasks)]
    types = [TASKS[(t + i) % 3][1] for t in range(n_tasks)]
    return km.PLE(km.columns(i), shared_expert_num=SH, specific_expert_num=S, num_levels=L,
                  expert_dnn_hidden_units=EXPERT_DIMS[i % 3], tower_dnn_hidden_units=TOWER_DIMS[i % 3],
                  gate_dnn_hidden_units=[(), (4,)][i % 2], l2_reg_dnn=1e-4, dnn_dropout=0.1,
                  dnn_activation=km.activation(act), dnn_use_bn=bn, task_types=types, task_names=names, seed=i)


def ple_without_specific_experts():
    return km.PLE(km.columns(4), shared_expert_num=2, specific_expert_num=0, num_levels=2,
                  expert_dnn_hidden_units=(6,), tower_dnn_hidden_units=(3,), gate_dnn_hidden_units=(4,),
                  dnn_use_bn=True, task_types=("regression", "binary"), task_names=("gmv", "ctr"))


def mmoe(bn):
    return km.MMOE(km.columns(2), num_experts=3, expert_dnn_hidden_units=(6, 4),
                   gate_dnn_hidden_units=(5,) if bn else (), tower_dnn_hidden_units=(3,),
                   dnn_activation=km.activation("prelu") if bn else "softmax", dnn_use_bn=bn,
                   task_types=("binary", "regression"), task_names=("ctr", "gmv"))


def shared_bottom(bn):
    return km.SharedBottom(km.columns(1), bottom_dnn_hidden_units=(7, 5), tower_dnn_hidden_units=(4,),
                           dnn_activation=km.layers.ReLU if bn else "sigmoid", dnn_use_bn=bn,
                           task_types=("regression", "binary"), task_names=("dwell", "ctr"))


def esmm(bn):
    return km.ESMM(km.columns(0), tower_dnn_hidden_units=(5, 3), dnn_activation="dice" if bn else "relu",
                   dnn_use_bn=bn)


def _cases():
    cases = {}
    for i, act in enumerate(ACTS):
        L, S, SH = PLE_SHAPES[i]
        for bn in (False, True):
            cases[f"keras-ple-{act}-bn{int(bn)}-L{L}S{S}SH{SH}"] = functools.partial(ple, i, act, bn)
    cases["keras-ple-S0-L2SH2"] = ple_without_specific_experts
    for bn in (False, True):
        cases[f"keras-mmoe-bn{int(bn)}"] = functools.partial(mmoe, bn)
        cases[f"keras-sharedbottom-bn{int(bn)}"] = functools.partial(shared_bottom, bn)
        cases[f"keras-esmm-bn{int(bn)}"] = functools.partial(esmm, bn)
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("keras_parity")


@functools.lru_cache(maxsize=None)
def _built(case: str, workdir: str):
    """Build, randomise, export (f32, f16, f32-of-f16-rounded) and score with Keras once per case."""
    model = CASES[case]()
    seed = zlib.crc32(case.encode())
    km.randomize(model, np.random.default_rng(seed))
    spec = ple_runtime.to_spec(model)
    paths = {kind: os.path.join(workdir, f"{case}.{kind}.ple") for kind in ("f32", "f16", "f16r")}
    ple_runtime.write(spec, paths["f32"])
    ple_runtime.write(spec, paths["f16"], dtype="f16")
    ple_runtime.write(spec, paths["f16r"], round_weights_to_f16=True)
    with ple_runtime.Model(paths["f32"]) as m:
        x = ple_runtime.random_inputs(m, BATCH, seed)
    return model, x, paths, export_keras.run_model(model, x), export_keras.run_gates(model, x)


@pytest.mark.parametrize("case", list(CASES))
def test_f32(case, workdir):
    model, x, paths, ref, ref_gates = _built(case, str(workdir))
    check_f32(case, paths["f32"], x, ref, ref_gates, KERAS_PARITY, "Keras")


@pytest.mark.parametrize("case", list(CASES))
def test_f16(case, workdir):
    model, x, paths, ref, _ = _built(case, str(workdir))
    check_f16(case, paths, x, ref, lambda rows: export_keras.f16_error(model, x, ref, rows=rows), KERAS_PARITY,
              "Keras")
    # the f16 rounding changed the Keras model only while it was measured
    assert np.array_equal(export_keras.run_model(model, x), ref)


def test_the_matrix_covers_what_it_claims(workdir):
    """The input vector really is reordered by group_name in odd cases, sequences really share
    tables with sparse features, and float32 id inputs are marked as such."""
    spec = ple_runtime.to_spec(_built("keras-ple-sigmoid-bn1-L2S2SH1", str(workdir))[0])
    assert spec["x0_order"] == ["user", "hist", "item", "tags", "ctx", "age"]  # groups: users, default, tags
    assert [f["name"] for f in spec["features"]] == ["ctx", "user", "hist", "item", "tags", "age"]
    feats = {f["name"]: f for f in spec["features"]}
    assert feats["item"]["table"] == feats["hist"]["table"] == "sparse_seq_emb_hist"
    spec = ple_runtime.to_spec(_built("keras-ple-tanh-bn0-L3S1SH2", str(workdir))[0])
    assert spec["x0_order"] == ["user", "item", "hist", "tags", "ctx", "age"]
    assert {f["name"]: f.get("id_f32") for f in spec["features"]}["user"] is True  # float32 input
