"""int8 files from real models against the issue's accuracy targets (docs/EXPORT.md, int8):

- a torch-rechub PLE trained for a few epochs on a synthetic CTR dataset with a learnable signal:
  AUC within 0.001 of the f32 model, rank correlation >= 0.999 per task, mean |delta| <= 2e-3,
  with the default export (x0's readers int8 with input scales, format 1.2), and the same layers
  without input scales demonstrably worse;
- a random-weight DeepCTR-Torch PLE: mean |delta| / max(1, |ref|) <= 2e-3 and rank correlation
  within 0.005 of what f16 parameters give the model itself;
plus the writer's per-layer precision rules and the verify report's metrics against scipy-free
references computed here.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_rechub")

import ple_runtime  # noqa: E402
from ple_runtime import format as fmt  # noqa: E402
import ple_runtime.verify  # noqa: E402
import sys  # noqa: E402

verify_mod = sys.modules["ple_runtime.verify"]
from _util import CTR_HIST_LEN, ctr_data, load_make_fixtures, train_two_tasks  # noqa: E402

L = CTR_HIST_LEN


@pytest.fixture(scope="module")
def trained_ple():
    from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature
    from torch_rechub.models.multi_task import PLE

    rng = np.random.default_rng(0)
    x, labels, nu, ni = ctr_data(30000, rng)
    feats = [SparseFeature("user_id", nu, 16), SparseFeature("item_id", ni, 16),
             SequenceFeature("hist", ni, 16, pooling="mean", shared_with="item_id", padding_idx=0)] + \
        [DenseFeature(f"d{i}") for i in range(3)]
    torch.manual_seed(0)
    model = PLE(feats, ["classification", "classification"], n_level=2, n_expert_specific=1, n_expert_shared=1,
                expert_params={"dims": [128, 64], "activation": "relu"},
                tower_params_list=[{"dims": [64, 32]}, {"dims": [64, 32]}])
    x_test, labels_test = train_two_tasks(model, x, labels, n_test=8192)
    return model, x_test, labels_test


def test_trained_rechub_ple_meets_the_accuracy_targets(trained_ple, tmp_path):
    model, x, labels = trained_ple
    path = tmp_path / "ple_int8.ple"
    ple_runtime.export(model, path, dtype="int8", max_len={"hist": L})
    pf = fmt.read_header_and_meta(path)
    i8 = {t.name[:-2] for t in pf.tensors if t.dtype == fmt.DTYPE_I8}
    assert pf.minor == 2 and {"l0.t0.e0.0", "l0.t1.e0.0", "l0.s.e0.0"} <= i8, "x0's readers are int8"
    assert len(pf.input_scales) == 3 and len({r for _, _, r in pf.input_scales}) == 1, "one shared r"
    with ple_runtime.Model(path) as m:
        names = m.output_names
    report = ple_runtime.verify(model, path, x, labels=dict(zip(names, labels)), verbose=True)
    assert report.ok
    for a in report.accuracy:
        assert a.spearman >= 0.999, a
        assert a.mean_abs <= 2e-3, a
        assert abs(a.auc_ours - a.auc_model) <= 1e-3, a
        assert a.auc_model > 0.65, f"the model learnt nothing: {a}"
        assert a.max_abs > 0, "int8 gave exactly the f32 scores: was it used?"
    # The metrics themselves, against direct computations on the two score columns.
    ours = ple_runtime.Model(path).predict(x)
    from ple_runtime import export_torch
    ref = export_torch.run_model(model, x)
    a0 = report.accuracy[0]
    assert a0.mean_abs == pytest.approx(np.abs(ours[:, 0] - ref[:, 0]).mean(), rel=1e-6)
    pos, neg = ref[labels[0] > 0.5, 0], ref[labels[0] < 0.5, 0]
    brute_auc = ((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    assert a0.auc_model == pytest.approx(brute_auc, abs=1e-9)


def test_x0_layers_in_int8_without_input_scales_break_the_targets(trained_ple, tmp_path):
    """Why x0's readers need input scales: int8 without them (one scale per sample over x0), the
    same model misses the mean |delta| target (the check above can fail), and is several times
    worse than the default file."""
    model, x, labels = trained_ple
    forced = {"l0.t0.e0.0": "int8", "l0.t1.e0.0": "int8", "l0.s.e0.0": "int8"}
    mean_abs = {}
    for name, kw in [("plain", dict(equalize=False, precision=forced)), ("equalized", {})]:
        path = tmp_path / f"{name}.ple"
        ple_runtime.export(model, path, dtype="int8", max_len={"hist": L}, **kw)
        report = ple_runtime.verify(model, path, x, raise_on_failure=False, verbose=True)
        assert report.ok == (name == "equalized")
        mean_abs[name] = max(a.mean_abs for a in report.accuracy)
    assert fmt.read_header_and_meta(tmp_path / "plain.ple").minor == 1
    assert mean_abs["plain"] > 2e-3 and mean_abs["plain"] > 3 * mean_abs["equalized"], mean_abs


def test_input_scales_from_tables_and_calibration(tmp_path):
    """The data-free input scales against a direct computation (powers of two nearest to
    1/max|table column|, 1 for raw dense columns), and calibration's against measured max |x0|;
    the weights are stored as diag(1/r)·W, which read_spec undoes exactly."""
    mf = load_make_fixtures()
    inputs_mod, mt, _ = mf.import_deepctr()
    model = mt.PLE(mf.deepctr_columns(inputs_mod), shared_expert_num=1, specific_expert_num=1, num_levels=1,
                   expert_dnn_hidden_units=(64, 32), tower_dnn_hidden_units=(32,), task_types=("binary", "binary"),
                   task_names=("a", "b")).eval()
    raw = ple_runtime.to_spec(model)
    spec = ple_runtime.normalize(raw)
    r = fmt.x0_input_scales(spec)
    want = []
    features = {f["name"]: f for f in spec["features"]}
    for name in spec["x0_order"]:
        f = features[name]
        if f["kind"] == "dense":
            want += [1.0] * f["width"]
        else:
            want += list(2.0 ** np.round(-np.log2(np.abs(spec["tables"][f["table"]]).max(axis=0))))
    assert np.array_equal(r, np.array(want)) and not np.all(r == 1)
    inputs = ple_runtime.random_inputs(ple_runtime.Model(_write(tmp_path, raw, "f32")), 300, seed=1)
    x0 = ple_runtime.reference._embed(spec, inputs)
    measured = fmt.x0_input_scales(spec, inputs)
    assert np.array_equal(measured, 2.0 ** np.round(-np.log2(np.abs(x0).max(axis=0))))
    path = tmp_path / "cal.ple"
    ple_runtime.export(model, path, dtype="int8", calibration=inputs)
    pf, tensors = fmt.read_tensors(path)
    assert np.array_equal(tensors[fmt.X0_SCALE_TENSOR].reshape(-1), measured)
    stored = fmt.read_spec(path)["levels"][0]["task_experts"][0][0][0]["weight"]
    w = spec["levels"][0]["task_experts"][0][0][0]["weight"].T
    step = np.abs(w * measured[:, None] ** -1).max(axis=0) / 127 * measured[:, None]
    assert np.all(np.abs(stored - w) <= step * 0.5 + 1e-12)
    with pytest.raises(ValueError, match="needs equalize"):
        ple_runtime.export(model, path, dtype="int8", calibration=inputs, equalize=False)


def _write(tmp_path, spec, dtype):
    path = tmp_path / f"{dtype}.ple"
    fmt.write(spec, path, dtype=dtype)
    return path


def test_random_deepctr_ple_against_f16_rank_baseline(tmp_path):
    mf = load_make_fixtures()
    inputs_mod, mt, _ = mf.import_deepctr()
    cols = mf.deepctr_columns(inputs_mod)
    torch.manual_seed(3)
    model = mt.PLE(cols, shared_expert_num=1, specific_expert_num=2, num_levels=2,
                   expert_dnn_hidden_units=(64, 32), gate_dnn_hidden_units=(16,), tower_dnn_hidden_units=(32,),
                   dnn_activation="relu", task_types=("binary", "binary"), task_names=("ctr", "cvr")).eval()
    mf.randomize(model, np.random.default_rng(3))  # the parity matrix's random weights
    path = tmp_path / "deepctr_int8.ple"
    ple_runtime.export(model, path, dtype="int8")
    pf = fmt.read_header_and_meta(path)
    assert pf.minor == 2 and any(t.dtype == fmt.DTYPE_I8 for t in pf.tensors) and pf.input_scales
    report = ple_runtime.verify(model, path, batch=512, verbose=True)
    assert report.ok
    for a in report.accuracy:
        assert a.mean_rel <= 2e-3
        assert a.spearman >= a.f16_spearman - 0.005


def test_precision_overrides(tmp_path):
    mf = load_make_fixtures()
    inputs_mod, mt, _ = mf.import_deepctr()
    model = mt.PLE(mf.deepctr_columns(inputs_mod), shared_expert_num=1, specific_expert_num=1, num_levels=1,
                   expert_dnn_hidden_units=(64, 32), tower_dnn_hidden_units=(32,), task_types=("binary", "binary"),
                   task_names=("a", "b")).eval()
    path = tmp_path / "m.ple"

    def dtypes():
        pf = fmt.read_header_and_meta(path)
        return {t.name[:-2]: fmt.DTYPE_NAMES[t.dtype] for t in pf.tensors if t.name.endswith(".w")}

    ple_runtime.export(model, path, dtype="int8", equalize=False)
    assert dtypes()["l0.t0.e0.0"] == "f32", "reads x0, no input scales"
    ple_runtime.export(model, path, dtype="int8")
    d = dtypes()
    assert d["l0.t0.e0.0"] == "i8", "reads x0, with input scales"
    assert d["l0.t0.e0.1"] == "i8" and d["tower0.0"] == "i8"
    assert d["l0.t0.g.0"] == "i8", "reads x0 with 64 outputs (DeepCTR's default gate DNN)"
    assert d["l0.t0.g.1"] == "f32", "a gate's logits: 2 outputs"
    text = fmt.describe(fmt.read_header_and_meta(path))
    assert "dense layers: " in text and "(i8: " in text and "l0.t0.e0.1" in text, text
    ple_runtime.export(model, path, dtype="int8", precision={"tower0": "f16", "l0.t0.e0.0": "f32"})
    d = dtypes()
    assert d["tower0.0"] == "f16" and d["l0.t0.e0.0"] == "f32" and d["l0.t1.e0.0"] == "i8"
    assert [(m, j) for m, j, _ in fmt.read_header_and_meta(path).input_scales] != []
    with pytest.raises(ValueError, match="names no layer"):
        ple_runtime.export(model, path, dtype="int8", precision={"tower9": "f32"})
    ple_runtime.export(model, path, dtype="f32", precision={"tower0": "int8"})
    assert dtypes()["tower0.0"] == "i8" and dtypes()["l0.t0.e0.1"] == "f32"


def test_reader_refuses_corrupt_int8(tmp_path):
    mf = load_make_fixtures()
    inputs_mod, mt, _ = mf.import_deepctr()
    model = mt.PLE(mf.deepctr_columns(inputs_mod), shared_expert_num=1, specific_expert_num=1, num_levels=1,
                   expert_dnn_hidden_units=(64, 32), tower_dnn_hidden_units=(8,), task_types=("binary", "binary"),
                   task_names=("a", "b")).eval()
    blob = fmt.to_bytes(ple_runtime.to_spec(model), dtype="int8")
    pf = fmt.parse(blob)
    t = next(t for t in pf.tensors if t.dtype == fmt.DTYPE_I8)
    at = pf.data_offset + t.offset
    for offset, value, needle in [(at + 4, b"\0\0\0\0", "not finite and positive"),
                                  (at + 64, b"\x05\0\0\0", "column sum"),
                                  (at + 128 + 1, b"\x80", "-128")]:
        b = bytearray(blob)
        b[offset:offset + len(value)] = value
        with pytest.raises(fmt.FormatError, match=needle):
            fmt.parse(_retag(b))
        bad = tmp_path / "bad.ple"
        bad.write_bytes(_retag(b))
        with pytest.raises(Exception, match=needle):
            ple_runtime.Model(bad)


def _retag(b: bytearray) -> bytes:
    """Recompute both checksums (so the check behind them is what fires)."""
    import struct
    import zlib

    meta_size = struct.unpack_from("<Q", b, 32)[0]
    data_offset = struct.unpack_from("<Q", b, 40)[0]
    head = bytes(b[:56])
    struct.pack_into("<I", b, 56, zlib.crc32(bytes(b[64:64 + meta_size]), zlib.crc32(head)))
    struct.pack_into("<I", b, 60, zlib.crc32(bytes(b[data_offset:])))
    return bytes(b)


def test_rank_correlation_and_auc_helpers():
    rng = np.random.default_rng(1)
    a = rng.normal(size=500)
    assert verify_mod.rank_correlation(a, a * 3 + 1) == pytest.approx(1.0)
    assert verify_mod.rank_correlation(a, -a) == pytest.approx(-1.0)
    # ties share their average rank: a constant column against anything is undefined
    assert np.isnan(verify_mod.rank_correlation(np.ones(5), np.arange(5)))
    y = (a > 0).astype(float)
    assert verify_mod.auc(a, y) == 1.0 and verify_mod.auc(-a, y) == 0.0
    assert verify_mod.logloss(np.full(4, 0.5), np.array([0, 1, 0, 1])) == pytest.approx(np.log(2))


def test_reader_refuses_corrupt_input_scales(tmp_path):
    """Hostile input scales (format 1.2): values that are not finite and > 0, a record naming a
    missing or non-int8 layer, a duplicate record, a tensor of the wrong shape, and a 1.2 file
    relabelled 1.1 (its r tensor is then unused): the Python reader and the Rust library both
    refuse each with a clear error."""
    import struct

    mf = load_make_fixtures()
    inputs_mod, mt, _ = mf.import_deepctr()
    model = mt.PLE(mf.deepctr_columns(inputs_mod), shared_expert_num=1, specific_expert_num=1, num_levels=1,
                   expert_dnn_hidden_units=(64, 32), tower_dnn_hidden_units=(8,), task_types=("binary", "binary"),
                   task_names=("a", "b")).eval()
    blob = fmt.to_bytes(ple_runtime.to_spec(model), dtype="int8")
    pf = fmt.parse(blob)
    assert pf.minor == 2 and len(pf.input_scales) == 5, "3 experts and 2 gates (64-unit gate DNN) read x0"
    assert "; input scales on 5 i8 layers (1 vector)" in fmt.describe(pf)
    ri = pf.input_scales[0][2]
    at = pf.data_offset + pf.tensors[ri].offset
    meta_end = 64 + pf.meta_size
    section = meta_end - 4 - 12 * len(pf.input_scales)
    f32_layer = next((m, j) for m, layers in enumerate(pf.mlps) for j, layer in enumerate(layers)
                     if pf.tensors[layer.weight].dtype == fmt.DTYPE_F32)
    bias = pf.mlps[0][0].bias
    cases = [(at, struct.pack("<f", 0.0), "not finite and > 0"),
             (at + 4, struct.pack("<f", float("nan")), "not finite and > 0"),
             (at + 8, struct.pack("<f", -1.0), "not finite and > 0"),
             (at + 12, struct.pack("<f", float("inf")), "not finite and > 0"),
             (section + 4, struct.pack("<I", 999), "no such layer"),
             (section + 4, struct.pack("<II", *f32_layer), "i8 layers only"),
             (section + 16, blob[section + 4:section + 16], "input scales already"),
             (section + 12, struct.pack("<I", bias), "f32 plain|plain f32"),
             (10, struct.pack("<H", 1), "trailing metadata|after the end of the metadata")]
    for offset, value, needle in cases:
        b = bytearray(blob)
        b[offset:offset + len(value)] = value
        with pytest.raises(fmt.FormatError, match=needle):
            fmt.parse(_retag(b))
        bad = tmp_path / "bad.ple"
        bad.write_bytes(_retag(b))
        with pytest.raises(Exception, match=needle):
            ple_runtime.Model(bad)


def test_dense_input_model_needs_no_input_scales(tmp_path):
    """x0 as one dense input: the data-free r is all ones, so the file has no input scales (format
    1.1) while its x0 reader is int8; calibration gives it some (1.2)."""
    rng = np.random.default_rng(4)
    spec = {"name": "dense_in", "features": [{"name": "x", "kind": "dense", "width": 8}], "tables": {},
            "bottom": [{"weight": rng.normal(size=(32, 8)), "bias": rng.normal(size=32), "activation": "relu"}],
            "levels": [],
            "towers": [{"mlp": [{"weight": rng.normal(size=(1, 32)), "bias": None, "activation": "identity"}],
                        "input": "bottom", "activation": "sigmoid"}],
            "outputs": [{"name": "p", "tower": 0}]}
    plain = fmt.parse(fmt.to_bytes(spec, dtype="int8"))
    assert plain.minor == 1 and not plain.input_scales
    assert fmt.DTYPE_NAMES[plain.tensors[plain.mlps[plain.bottom][0].weight].dtype] == "i8"
    x = {"x": (rng.normal(size=(64, 8)) * np.arange(1, 9) ** 3).astype(np.float32)}
    cal = fmt.parse(fmt.to_bytes(spec, dtype="int8", calibration=x))
    assert cal.minor == 2 and [(m, j) for m, j, _ in cal.input_scales] == [(cal.bottom, 0)]
