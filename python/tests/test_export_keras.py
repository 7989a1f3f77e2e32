"""ple_runtime.export / verify for DeepCTR 0.9.4 Keras models: a trained model in one call,
verify's verdicts, f32 ids above 2^24, the refusals, and no torch on the way.

The parity matrix over random configurations is test_keras.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

try:
    import _keras_models as km
except ImportError as exc:
    if os.environ.get("PLE_REQUIRE_TF") == "1":
        raise
    pytest.skip(f"tensorflow / tf-keras / deepctr not usable: {exc}", allow_module_level=True)

import ple_runtime  # noqa: E402
from _util import rel_err  # noqa: E402
from ple_runtime import export_keras  # noqa: E402

Sparse, VarLen, Dense = km.SparseFeat, km.VarLenSparseFeat, km.DenseFeat
HERE = os.path.dirname(os.path.abspath(__file__))


def small_columns():
    return [Sparse("user", 20, 4), VarLen(Sparse("hist", 30, 4), 6, "mean"), Sparse("item", 30, 4),
            Dense("price", 1)]


def training_data(rng, n):
    hist = rng.integers(1, 30, (n, 6))
    hist[np.arange(6)[None, :] >= rng.integers(0, 7, n)[:, None]] = 0
    x = {"user": rng.integers(0, 20, n), "hist": hist, "item": rng.integers(0, 30, n),
         "price": rng.normal(size=(n, 1)).astype(np.float32)}
    y = [(rng.random(n) < 0.3).astype(np.float32), rng.normal(size=n).astype(np.float32)]
    return x, y


def test_a_trained_ple_exports_in_one_call_and_verifies(tmp_path, capsys):
    """A DeepCTR PLE with BatchNorm and Dice trained for a few steps: export, then verify (f32
    and f16) -- the BatchNorm moving statistics, Dice statistics and weights that training
    moved are what the file holds."""
    km.tf.keras.utils.set_random_seed(7)
    # small: tracing the training step is most of this test's time (about 1 s per expert)
    model = km.PLE(small_columns(), shared_expert_num=1, specific_expert_num=1, num_levels=2,
                   expert_dnn_hidden_units=(8,), tower_dnn_hidden_units=(4,), dnn_use_bn=True,
                   dnn_activation="dice", dnn_dropout=0.2, task_types=("binary", "regression"),
                   task_names=("ctr", "dwell"))
    model.compile("adam", loss=["binary_crossentropy", "mse"])
    bn = model.get_layer("level_0_expert_shared_0").bn_layers[0]
    before = bn.moving_mean.numpy().copy()
    x, y = training_data(np.random.default_rng(3), 512)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)  # 16 steps
    assert not np.allclose(bn.moving_mean.numpy(), before)  # training really moved the statistics

    ple_runtime.export(model, tmp_path / "trained.ple")
    report = ple_runtime.verify(model, tmp_path / "trained.ple")
    assert report.ok and report.worst <= 1e-5 and report.framework == "keras"
    assert [o.name for o in report.outputs] == ["ctr", "dwell"] and report.gates is not None
    assert "OK: worst" in capsys.readouterr().out
    ple_runtime.export(model, tmp_path / "trained_f16.ple", dtype="f16")
    report16 = ple_runtime.verify(model, tmp_path / "trained_f16.ple", batch=256)
    assert report16.ok and report16.torch_f16_error > 0
    assert "keras with f16 parameters" in str(report16)

    # the file scores what model.predict gives on the training inputs, fed as Keras takes them
    want = np.concatenate(model.predict(x, verbose=0), axis=1)
    with ple_runtime.Model(tmp_path / "trained.ple") as m:
        assert m.name == "deepctr.PLE" and m.output_names == ["ctr", "dwell"]
        assert m.input_names == ["user", "hist", "item", "price"]
        got = m.predict({k: v[:, None] if k in ("user", "item") else v for k, v in x.items()})
    assert rel_err(got, want) <= 1e-5


@pytest.fixture(scope="module")
def mmoe_model():
    model = km.MMOE(small_columns(), num_experts=3, expert_dnn_hidden_units=(8,), tower_dnn_hidden_units=(4,),
                    dnn_use_bn=True, task_names=("ctr", "cvr"))
    km.randomize(model, np.random.default_rng(11))
    return model


def test_verify_takes_keras_style_inputs_and_fails_on_a_wrong_file(mmoe_model, tmp_path):
    ple_runtime.export(mmoe_model, tmp_path / "mmoe.ple", name="my-mmoe", task_names=["click", "buy"])
    rng = np.random.default_rng(5)
    x, _ = training_data(rng, 64)
    x = {k: (v[:, None] if k in ("user", "item") else v).astype(np.float32 if k == "price" else np.int32)
         for k, v in x.items()}
    report = ple_runtime.verify(mmoe_model, tmp_path / "mmoe.ple", x, verbose=False)
    assert report.ok and report.batch == 64 and [o.name for o in report.outputs] == ["click", "buy"]
    # a weight that is off by 1e-3 is caught, and named by output
    spec = ple_runtime.to_spec(mmoe_model)
    spec["towers"][1]["mlp"][-1]["bias"] = spec["towers"][1]["mlp"][-1]["bias"] + 1e-3
    ple_runtime.write(spec, tmp_path / "off.ple")
    with pytest.raises(ple_runtime.VerifyError, match="above the tolerance") as info:
        ple_runtime.verify(mmoe_model, tmp_path / "off.ple", x, verbose=False)
    assert info.value.report.outputs[0].max_rel <= 1e-5 < info.value.report.outputs[1].max_rel


def test_float32_ids_above_2_24_round_like_keras(tmp_path):
    """A SparseFeat with dtype float32 feeds ids through f32 before the Embedding casts them:
    2^24 + 1 is looked up as 2^24. The exporter marks the feature and libple rounds the same way."""
    vocab = (1 << 24) + 16
    cols = [Sparse("big", vocab, 1, dtype="float32"), Sparse("user", 20, 2), Dense("age", 1)]
    model = km.SharedBottom(cols, bottom_dnn_hidden_units=(4,), tower_dnn_hidden_units=(3,),
                            task_types=("binary", "regression"), task_names=("ctr", "gmv"))
    emb = model.get_layer("sparse_emb_big")
    emb.embeddings.assign(np.random.default_rng(0).normal(size=(vocab, 1)).astype(np.float32))
    path = tmp_path / "big.ple"
    ple_runtime.export(model, path)
    base = 1 << 24
    big = np.array([0, 7, base - 1, base, base + 1, base + 2, base + 3, base + 5, base + 7, base + 14], np.int64)
    n = len(big)
    x = {"big": big, "user": np.full(n, 3), "age": np.full((n, 1), 0.25, np.float32)}
    want = export_keras.run_model(model, x)
    with ple_runtime.Model(path) as m:
        assert m.input("big").kind == "sparse"
        got = m.predict(x)
    assert rel_err(got, want) <= 1e-5
    assert np.array_equal(got[3], got[4]) and np.array_equal(got[6], got[7])  # base+1 -> base; base+3, +5 -> +4


# --------------------------------------------------------------------------- refusals


def _refused(model, *fragments):
    with pytest.raises(ple_runtime.ExportError) as info:
        ple_runtime.to_spec(model)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    return str(info.value)


def _ple(cols, **kw):
    return km.PLE(cols, expert_dnn_hidden_units=(4,), tower_dnn_hidden_units=(2,), **kw)


def test_refuses_hashed_ids():
    _refused(_ple([Sparse("user", 20, 2, use_hash=True, dtype="string"), Dense("age", 1)]),
             "Hash layer", "use_hash=True", "hash the ids to integers")


def test_refuses_sequence_lengths_and_weights():
    _refused(_ple([VarLen(Sparse("hist", 20, 2), 4, "sum", length_name="hist_len"), Dense("age", 1)]),
             "length_name", "pad the sequences with 0")
    _refused(_ple([VarLen(Sparse("hist", 20, 2), 4, "sum", weight_name="hist_w"), Dense("age", 1)]),
             "weight_name", "WeightedSequenceLayer")


def test_refuses_a_dense_transform():
    _refused(_ple([Dense("age", 1, transform_fn=lambda v: (v - 3.0) / 4.2), Sparse("user", 20, 2)]),
             "DenseFeat 'age'", "transform_fn", "apply it to the values before scoring")


@pytest.mark.parametrize("act", ["elu", "gelu", "swish"])
def test_refuses_activations_outside_the_format(act):
    _refused(_ple(small_columns(), dnn_activation=act), f"dnn_activation={act!r}", "not supported",
             "'relu', 'sigmoid', 'tanh', 'linear', 'softmax', 'dice'")


def test_refuses_a_ple_whose_shared_gate_keras_dropped():
    _refused(_ple(small_columns(), shared_expert_num=0, specific_expert_num=1, num_levels=2),
             "shared_expert_num=0", "use shared_expert_num >= 1 or num_levels=1")


def test_refuses_models_that_are_not_deepctr_multitask():
    inp = km.tf.keras.Input((3,), name="x")
    plain = km.tf.keras.Model(inp, km.tf.keras.layers.Dense(1, activation="sigmoid")(inp))
    _refused(plain, "not by DeepCTR's PredictionLayer", "PLE, MMOE, ESMM and SharedBottom")
    with pytest.raises(ple_runtime.ExportError, match="not a Keras model"):
        export_keras.to_spec(object())


def test_refuses_keras_3_models():
    keras3 = pytest.importorskip("keras")  # tensorflow 2.21 installs Keras 3 next to tf-keras
    if not keras3.__version__.startswith("3."):
        pytest.skip(f"keras {keras3.__version__} is not Keras 3")
    inp = keras3.Input((3,), name="x")
    _refused(keras3.Model(inp, keras3.layers.Dense(1)(inp)), "a Keras 3 model", "TF_USE_LEGACY_KERAS=1")


# --------------------------------------------------------------------------- no torch


def test_export_verify_and_score_never_import_torch(tmp_path):
    """A TensorFlow user's whole path -- export, verify (f32 and f16), Model.predict -- in a
    fresh interpreter, which must end without torch in sys.modules (whether or not torch is
    installed; .ci/run's TensorFlow environment has none)."""
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{os.path.dirname(HERE)!r}, {HERE!r}]
        import numpy as np
        import _keras_models as km
        import ple_runtime
        cols = [km.SparseFeat("user", 20, 4), km.VarLenSparseFeat(km.SparseFeat("hist", 30, 4), 6, "max"),
                km.DenseFeat("price", 1)]
        model = km.ESMM(cols, tower_dnn_hidden_units=(8,), dnn_use_bn=True)
        km.randomize(model, np.random.default_rng(0))
        ple_runtime.export(model, {str(tmp_path / "esmm.ple")!r})
        ple_runtime.export(model, {str(tmp_path / "esmm16.ple")!r}, dtype="f16")
        assert ple_runtime.verify(model, {str(tmp_path / "esmm.ple")!r}, batch=64, verbose=False).ok
        assert ple_runtime.verify(model, {str(tmp_path / "esmm16.ple")!r}, batch=64, verbose=False).ok
        with ple_runtime.Model({str(tmp_path / "esmm.ple")!r}) as m:
            assert m.predict(ple_runtime.random_inputs(m, 8)).shape == (8, 2)
        assert "torch" not in sys.modules, sorted(k for k in sys.modules if k.startswith("torch"))
        print("no torch")
    """)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0 and "no torch" in run.stdout, run.stdout + run.stderr
