"""Exporters against the real libraries: reference == torch for every model kind.

Skipped cleanly when torch / torch-rechub / deepctr-torch are not installed. The
models are the fixture builders of tools/make_fixtures.py (real library classes with
every parameter randomised).
"""

import numpy as np
import pytest

try:
    import torch
    import torch_rechub  # noqa: F401
except Exception as exc:  # a CUDA-built torch without its libraries raises ValueError/OSError, not ImportError
    pytest.skip(f"torch / torch-rechub not usable: {exc}", allow_module_level=True)

from _util import load_make_fixtures  # noqa: E402
from ple_runtime import format as fmt  # noqa: E402
from ple_runtime import numpy_runtime  # noqa: E402

mf = load_make_fixtures()
from ple_runtime import export_torch  # noqa: E402

RECHUB = [n for n in mf.FIXTURES if not n.startswith("deepctr")]
DEEPCTR = [n for n in mf.FIXTURES if n.startswith("deepctr")]


def _has_deepctr():
    try:
        mf.import_deepctr()
        return True
    except ImportError:
        return False


@pytest.mark.parametrize("name", RECHUB + DEEPCTR)
def test_reference_matches_library(name, tmp_path):
    if name in DEEPCTR and not _has_deepctr():
        pytest.skip("deepctr-torch not installed")
    torch.set_num_threads(1)
    model, spec, canon, x, ref_out, ref_gates, torch_out, torch_gates = mf.build(name, seed=1234, batch=11)
    assert mf.rel_err(ref_out, torch_out.astype(np.float64)) <= 1e-5
    assert mf.rel_err(ref_gates, torch_gates.astype(np.float64)) <= 1e-5
    path = tmp_path / "m.ple"
    export_torch.export(model, path, **_opts(name))
    out, gates = numpy_runtime.score_file(path, x)
    assert mf.rel_err(out, ref_out) <= 1e-5 and mf.rel_err(gates, ref_gates) <= 1e-5


def _opts(name):
    _, opts = mf.FIXTURES[name]()
    return opts


def test_shapes_and_names():
    model, opts = mf.build_rechub_esmm()
    spec = export_torch.to_spec(model, **opts)
    assert [o["name"] for o in spec["outputs"]] == ["cvr", "ctr", "ctcvr"]
    model, opts = mf.build_rechub_ple_old_tower()
    spec = export_torch.to_spec(model, **opts)
    assert [len(t["mlp"]) for t in spec["towers"]] == [1, 1]  # no final Linear: vector towers
    model, opts = mf.build_rechub_ple2()
    spec = export_torch.to_spec(model, **opts)
    assert spec["x0_order"] == ["user", "item", "item_alt", "hist", "tags", "age", "ctx"]
    assert set(spec["tables"]) == {"user", "item", "tags"}
    assert spec["features"][5]["pad_id"] == 0 and spec["features"][6]["pad_id"] is None


def test_deepctr_quirks():
    if not _has_deepctr():
        pytest.skip("deepctr-torch not installed")
    model, _ = mf.build_deepctr_ple()
    spec = export_torch.to_spec(model)
    assert [len(lv["shared_experts"]) for lv in spec["levels"]] == [1, 1]  # SH from the gate width
    assert spec["levels"][-1]["shared_gate"] is None  # unused last-level shared gate dropped
    assert spec["x0_order"] == ["user", "item", "hist_max", "hist_mean", "tags", "ctx", "age"]
    assert all(f["id_f32"] for f in spec["features"] if f["kind"] != "dense")
    bias = model.out[0].bias.item()
    assert spec["towers"][0]["mlp"][-1]["bias"][0] == pytest.approx(bias)  # PredictionLayer bias folded
    model, _ = mf.build_deepctr_esmm()
    spec = export_torch.to_spec(model)
    assert [o["name"] for o in spec["outputs"]] == ["ctr", "ctcvr"]
    assert spec["towers"][0]["mlp"][-1]["bias"][0] == spec["towers"][1]["mlp"][-1]["bias"][0]


def test_sequence_bound_defaults_to_256_with_a_padding_idx():
    Dense, Seq, Sparse, MLP, PLE, *_ = mf.rechub_imports()

    def ple(feats):
        return PLE(feats, ["classification"], 1, 1, 1, {"dims": [4]}, [{"dims": [2]}])

    def bounds(model, **kw):
        return {f["name"]: f["max_len"] for f in export_torch.to_spec(model, **kw)["features"]
                if f["kind"] == "sequence"}

    feats = [Sparse("u", 5, 2), Seq("h", 5, 2, pooling="mean", padding_idx=0),
             Seq("g", 5, 2, pooling="sum", padding_idx=0)]
    assert bounds(ple(feats)) == {"h": export_torch.DEFAULT_MAX_LEN, "g": 256}
    assert bounds(ple(feats), max_len={"h": 1000}) == {"h": 1000, "g": 256}
    assert bounds(ple(feats), max_len=7) == {"h": 7, "g": 7}


def test_default_bound_scores_like_torch_on_shorter_padding(tmp_path):
    """A file exported without max_len (bound 256) scores histories padded to 5 by torch as torch
    does: padding is masked, so the length it is padded to changes nothing."""
    from ple_runtime import verify
    Dense, Seq, Sparse, MLP, PLE, *_ = mf.rechub_imports()
    torch.manual_seed(3)
    model = PLE([Sparse("u", 9, 4), Seq("h", 9, 4, pooling="mean", padding_idx=0)], ["classification"] * 2,
                1, 1, 1, {"dims": [8]}, [{"dims": [4]}] * 2).eval()
    path = tmp_path / "m.ple"
    export_torch.export(model, path)
    rng = np.random.default_rng(0)
    hist = rng.integers(1, 9, size=(33, 5))
    for r, n in enumerate(rng.integers(0, 6, size=33)):
        hist[r, n:] = 0
    inputs = {"u": rng.integers(0, 9, size=33), "h": hist}
    report = verify(model, path, inputs, verbose=False)  # raises above 1e-5
    assert report.ok and report.batch == 33


def test_refusals():
    Dense, Seq, Sparse, MLP, PLE, *_ = mf.rechub_imports()

    def ple(feats, act="relu"):
        return PLE(feats, ["classification"], 1, 1, 1, {"dims": [4], "activation": act}, [{"dims": [2]}])

    with pytest.raises(export_torch.ExportError, match="'h'.*without padding_idx.*pass max_len"):
        export_torch.to_spec(ple([Sparse("u", 5, 2), Seq("h", 5, 2, pooling="sum")]))
    with pytest.raises(export_torch.ExportError, match="pooling 'concat'"):
        export_torch.to_spec(_with_concat(ple([Sparse("u", 5, 2), Seq("h", 5, 2, pooling="sum")])), max_len=3)
    with pytest.raises(export_torch.ExportError, match="one embed_dim"):
        export_torch.to_spec(ple([Sparse("u", 5, 2), Sparse("v", 5, 3)]))
    with pytest.raises(export_torch.ExportError, match=r"cgc_layers\.0\.experts_specific\.0\.mlp\.2: activation .*ELU"):
        export_torch.to_spec(ple([Sparse("u", 5, 2)], act=torch.nn.ELU))
    if _has_deepctr():
        inputs, mt, act = mf.import_deepctr()
        cols = [inputs.SparseFeat("u", 5, 2),
                inputs.VarLenSparseFeat(inputs.SparseFeat("h", 5, 2), 3, "mean", length_name="h_len")]
        model = mt.MMOE(cols, num_experts=2, expert_dnn_hidden_units=(3,), tower_dnn_hidden_units=(2,))
        with pytest.raises(export_torch.ExportError, match="length_name"):
            export_torch.to_spec(model)
        model = mt.MMOE(cols[:1], num_experts=2, expert_dnn_hidden_units=(3,), tower_dnn_hidden_units=(2,))
        model.expert_dnn[0].activation_layers[0] = act.Dice(3, dim=3)
        with pytest.raises(export_torch.ExportError, match=r"expert_dnn\.0\.activation_layers\.0: .*dim=3"):
            export_torch.to_spec(model)


def _with_concat(model):
    for f in model.features:
        if f.name == "h":
            f.pooling = "concat"
    return model


def test_bn_without_running_stats_is_refused():
    Dense, Seq, Sparse, MLP, PLE, *_ = mf.rechub_imports()
    model = PLE([Sparse("u", 5, 2)], ["classification"], 1, 1, 1, {"dims": [4]}, [{"dims": [2]}])
    model.towers[0].mlp[1] = torch.nn.BatchNorm1d(2, track_running_stats=False)
    with pytest.raises(export_torch.ExportError, match=r"towers\.0\.mlp\.1: BatchNorm1d without running"):
        export_torch.to_spec(model)


def test_export_roundtrip_f16(tmp_path):
    model, opts = mf.build_rechub_cgc()
    mf.randomize(model, np.random.default_rng(0))
    pf = export_torch.export(model, tmp_path / "a.ple", dtype="f16", **opts)
    assert any(t.dtype == fmt.DTYPE_F16 for t in pf.tensors)


def test_wrappers_are_unwrapped(tmp_path):
    """nn.DataParallel and torch.compile hold the same parameters: export and verify see through
    them (a compiled model is never run: verify scores the model inside)."""
    import ple_runtime

    model, opts = mf.build_rechub_cgc()
    mf.randomize(model, np.random.default_rng(3))
    export_torch.export(model, tmp_path / "plain.ple", **opts)
    plain = (tmp_path / "plain.ple").read_bytes()
    for wrapped in (torch.nn.DataParallel(model), torch.compile(model), torch.compile(torch.nn.DataParallel(model))):
        assert export_torch.unwrap(wrapped) is model
        path = tmp_path / "w.ple"
        ple_runtime.export(wrapped, path, **opts)
        assert path.read_bytes() == plain
        report = ple_runtime.verify(wrapped, path, batch=32, verbose=False)
        assert report.ok


def test_verify_checks_ids_with_ple_messages(tmp_path):
    import ple_runtime

    model, opts = mf.build_rechub_cgc()
    mf.randomize(model, np.random.default_rng(4))
    path = tmp_path / "m.ple"
    export_torch.export(model, path, **opts)
    with ple_runtime.Model(path) as m:
        x = ple_runtime.random_inputs(m, 8, 0)
        sparse = next(i for i in m.inputs if i.kind == "sparse")
    x[sparse.name] = x[sparse.name].copy()
    x[sparse.name][5] = sparse.vocab_size  # one past the table: torch would raise IndexError
    with pytest.raises(ple_runtime.PleError, match=rf"input '{sparse.name}', sample 5.*out of range"):
        ple_runtime.verify(model, path, inputs=x, verbose=False)


def _c_scores(lib, path, columns, batch, width):
    """Scores through the C ABI (ple_session_run) directly: columns [(ids or None, floats or None,
    offsets or None)] in the model's input order."""
    import ctypes

    class Column(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char_p), ("ids", ctypes.POINTER(ctypes.c_int64)),
                    ("floats", ctypes.POINTER(ctypes.c_float)), ("len", ctypes.c_size_t),
                    ("offsets", ctypes.POINTER(ctypes.c_int64)), ("offsets_len", ctypes.c_size_t)]

    m, s = ctypes.c_void_p(), ctypes.c_void_p()
    assert lib.ple_model_open(str(path).encode(), 0, ctypes.byref(m)) == 0
    assert lib.ple_session_new(m, batch, ctypes.byref(s)) == 0
    cols = (Column * len(columns))()
    keep = []
    for c, (ids, floats, offsets) in zip(cols, columns):
        for field, arr, ctype in (("ids", ids, ctypes.c_int64), ("floats", floats, ctypes.c_float),
                                  ("offsets", offsets, ctypes.c_int64)):
            if arr is not None:
                arr = np.ascontiguousarray(arr)
                keep.append(arr)
                setattr(c, field, arr.ctypes.data_as(ctypes.POINTER(ctype)))
                if field == "offsets":
                    c.offsets_len = arr.size
                else:
                    c.len = arr.size
    out = np.zeros(batch * width, np.float32)
    st = lib.ple_session_run(s, batch, cols, len(columns), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                             out.size, None, 0)
    err = ctypes.string_at(lib.ple_session_last_error(s)).decode()
    lib.ple_session_free(s)
    lib.ple_model_free(m)
    return st, out, err


def test_export_without_tables_scores_vectors_as_the_full_file_scores_ids(tmp_path):
    """tables=False / {feature: False}: the file leaves those tables out (flag bit 1); scored
    through the C ABI with the tables' rows as vectors it gives the full file's scores for the
    ids bit for bit, and refuses ids."""
    import ctypes
    from pathlib import Path
    lib_path = Path(__file__).resolve().parents[2] / "target" / "release" / "libple.so"
    if not lib_path.is_file():
        pytest.skip("target/release/libple.so not built")
    lib = ctypes.CDLL(str(lib_path))
    P, N = ctypes.c_void_p, ctypes.c_size_t
    lib.ple_session_last_error.restype = P
    lib.ple_session_last_error.argtypes = [P]
    lib.ple_model_open.argtypes = [ctypes.c_char_p, ctypes.c_uint32, P]
    lib.ple_session_new.argtypes = [P, N, P]
    lib.ple_session_run.argtypes = [P, N, P, N, P, N, P, N]
    lib.ple_session_free.argtypes = [P]
    lib.ple_model_free.argtypes = [P]
    Dense, Seq, Sparse, MLP, PLE, *_ = mf.rechub_imports()
    torch.manual_seed(5)
    model = PLE([Sparse("u", 9, 4), Seq("h", 12, 4, pooling="mean", padding_idx=0), Dense("p")],
                ["classification"] * 2, 1, 1, 1, {"dims": [8]}, [{"dims": [4]}] * 2).eval()
    full, bare, some = tmp_path / "full.ple", tmp_path / "bare.ple", tmp_path / "some.ple"
    export_torch.export(model, full, max_len=6)
    export_torch.export(model, bare, max_len=6, tables=False)
    export_torch.export(model, some, max_len=6, tables={"u": False})
    pf = fmt.read_header_and_meta(bare)
    assert [f.flags & 2 for f in pf.features] == [2, 2, 0]
    assert bare.stat().st_size < some.stat().st_size < full.stat().st_size
    with pytest.raises(export_torch.ExportError, match="'p'"):
        export_torch.to_spec(model, max_len=6, tables={"p": False})

    rng = np.random.default_rng(1)
    batch = 17
    u = rng.integers(0, 9, batch)
    hist = rng.integers(1, 12, (batch, 6))
    lengths = rng.integers(0, 7, batch)
    for r, n in enumerate(lengths):
        hist[r, n:] = 0
    price = rng.random(batch, dtype=np.float32)
    table_u = model.embedding.embed_dict["u"].weight.detach().numpy().astype(np.float32)
    table_h = model.embedding.embed_dict["h"].weight.detach().numpy().astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    h_vectors = np.concatenate([table_h[hist[r, :n]] for r, n in enumerate(lengths)] + [np.zeros((0, 4))])
    width = 2
    st, want, err = _c_scores(lib, full, [(u, None, None), (hist.ravel(), None, None), (None, price, None)],
                              batch, width)
    assert st == 0, err
    st, got, err = _c_scores(lib, bare, [(None, table_u[u].ravel(), None),
                                         (None, h_vectors.astype(np.float32).ravel(), offsets),
                                         (None, price, None)], batch, width)
    assert st == 0, err
    assert np.ptp(want) > 0 and want.view(np.uint32).tolist() == got.view(np.uint32).tolist()
    st, _, err = _c_scores(lib, some, [(None, table_u[u].ravel(), None), (hist.ravel(), None, None),
                                       (None, price, None)], batch, width)
    assert st == 0, err
    st, _, err = _c_scores(lib, bare, [(u, None, None), (hist.ravel(), None, None), (None, price, None)],
                           batch, width)
    assert st == 23 and "input 'u' expects embedding vectors (floats): this file has no table for it" in err
