"""DeepCTR 0.9.4 on TensorFlow for the Keras tests: imports (offline, Keras 2 through tf-keras),
model builders and a seeded randomisation of every weight.

Importing this module raises ImportError when tensorflow, tf-keras or deepctr is missing; the
test modules then skip, unless PLE_REQUIRE_TF=1 (as in .ci/run's TensorFlow stage), where a
missing framework is an error rather than a skip.
"""

from __future__ import annotations

import os

import numpy as np

# DeepCTR 0.9.4 is written for Keras 2: on TensorFlow 2.16+ that is tf-keras, selected by this
# variable before tensorflow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:  # deepctr asks PyPI for a newer release in a thread on import: keep the tests offline
    import requests

    class _Offline:
        status_code, text = 599, "{}"

    requests.get = lambda *a, **k: _Offline()
except ImportError:
    pass

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from deepctr.feature_column import DenseFeat, SparseFeat, VarLenSparseFeat  # noqa: E402
from deepctr.models.multitask import ESMM, MMOE, PLE, SharedBottom  # noqa: E402

if tf.keras.Model is not tf_keras.Model:
    raise ImportError("tf.keras is not tf-keras: TF_USE_LEGACY_KERAS=1 must be set before tensorflow is imported")

tf.get_logger().setLevel("ERROR")
layers = tf.keras.layers
DEFAULT_GROUP = "default_group"
__all__ = ["tf", "tf_keras", "DenseFeat", "SparseFeat", "VarLenSparseFeat", "ESMM", "MMOE", "PLE", "SharedBottom",
           "randomize", "activation", "columns"]


def activation(name: str):
    """dnn_activation for a test activation name: Keras strings, 'dice', or a layer class."""
    return {"prelu": layers.PReLU, "leakyrelu": layers.LeakyReLU}.get(name, name)


def columns(i: int) -> list:
    """Dense features listed first, a sequence sharing the item table (DeepCTR 0.9.4 then looks the
    SparseFeat up in the sequence's mask_zero table too), sum / mean / max pooling, embedding
    dims 2-3, ids fed as float32 / int64 / int32, and (odd i) group_name grouping, which reorders
    the input vector: groups of the SparseFeats first, then sequence-only groups, dense last."""
    pools = ["sum", "mean", "max"]
    # grouped: x0 = [user, hist] (group "users"), [item] (default), [tags] (group "tags"), dense
    user_group, tag_group = ("users", "tags") if i % 2 else (DEFAULT_GROUP, DEFAULT_GROUP)
    return [DenseFeat("ctx", 2),
            SparseFeat("user", 25, 2 + i % 2, dtype=["int32", "int64", "float32"][i % 3], group_name=user_group),
            VarLenSparseFeat(SparseFeat("hist", 30, 3, embedding_name="item", group_name=user_group), 5, pools[i % 3]),
            SparseFeat("item", 30, 3),
            VarLenSparseFeat(SparseFeat("tags", 12, 2, group_name=tag_group), 3, pools[(i + 1) % 3]),
            DenseFeat("age", 1)]


def _is(obj, name: str) -> bool:
    return type(obj).__name__ == name


def randomize(model, rng: np.random.Generator) -> None:
    """Give every weight (BatchNormalization moving statistics included) a seeded random value.
    Scales keep pre-activations O(1) so sigmoids and softmaxes are not saturated. Fails if any
    weight of the model is left untouched."""
    touched: set[int] = set()

    def put(v, values) -> None:
        v.assign(np.asarray(values, dtype=np.float32).reshape(v.shape))
        touched.add(id(v))

    def kernel(v):
        put(v, rng.normal(0, 1.2 / np.sqrt(v.shape[0]), v.shape))

    for m in model._flatten_layers(include_self=False, recursive=True):
        if _is(m, "Embedding"):
            put(m.embeddings, rng.normal(0, 0.6, m.embeddings.shape))
        elif _is(m, "DNN"):
            for k, b in zip(m.kernels, m.bias):
                kernel(k)
                put(b, rng.normal(0, 0.3, b.shape))
        elif _is(m, "BatchNormalization"):
            n = m.moving_mean.shape
            if m.scale:
                put(m.gamma, rng.uniform(0.6, 1.4, n))
            if m.center:
                put(m.beta, rng.normal(0, 0.3, n))
            put(m.moving_mean, rng.normal(0, 0.3, n))
            put(m.moving_variance, rng.uniform(0.4, 2.0, n))
        elif _is(m, "Dice"):
            put(m.alphas, rng.uniform(-0.8, 0.8, m.alphas.shape))
        elif _is(m, "PReLU"):
            put(m.alpha, rng.uniform(-0.3, 0.6, m.alpha.shape))
        elif _is(m, "Dense"):
            kernel(m.kernel)
            if m.use_bias:
                put(m.bias, rng.normal(0, 0.3, m.bias.shape))
        elif _is(m, "PredictionLayer") and m.use_bias:
            put(m.global_bias, rng.normal(0, 0.4, 1))
    for v in model.weights:
        if id(v) not in touched:
            raise RuntimeError(f"randomize: {v.name} was not randomised")
