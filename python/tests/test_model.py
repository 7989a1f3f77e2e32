"""ple_runtime.Model: scoring through libple's C ABI (numpy only, no torch).

Hand-built specs (every activation and feature kind) are written with ple_runtime.write,
scored by libple and compared with the float64 reference; bad input must raise a
PleError carrying the library's own message.
"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import ple_runtime
from _util import full_spec, inputs_for, layer, rel_err
from ple_runtime import PleError, _native

try:
    _native.lib()
except ple_runtime.LibraryNotFound as exc:  # pragma: no cover - CI builds the library first
    pytest.skip(f"libple not found: {exc}", allow_module_level=True)


@pytest.fixture(scope="module")
def spec():
    return full_spec(np.random.default_rng(11))


@pytest.fixture(scope="module")
def path(spec, tmp_path_factory):
    p = tmp_path_factory.mktemp("model") / "full.ple"
    ple_runtime.write(spec, p)
    return p


@pytest.fixture
def model(path):
    with ple_runtime.Model(path) as m:
        yield m


@pytest.fixture(scope="module")
def x(spec):
    return inputs_for(spec, np.random.default_rng(3), batch=41)


def test_matches_reference(spec, model, x):
    ref, ref_gates = ple_runtime.forward(spec, x)
    out, gates = model.predict(x, gates=True)
    assert out.dtype == np.float32 and out.shape == ref.shape == (41, model.output_width)
    assert gates.shape == (41, model.gate_width)
    assert rel_err(out, ref) <= 1e-5 and rel_err(gates, ref_gates) <= 1e-5
    assert np.array_equal(model.predict(x), out)


def test_bottom_and_f16(tmp_path, x):
    spec = full_spec(np.random.default_rng(12), bottom=True)
    ple_runtime.write(spec, tmp_path / "a.ple")
    ple_runtime.write(spec, tmp_path / "h.ple", dtype="f16")
    ple_runtime.write(spec, tmp_path / "r.ple", round_weights_to_f16=True)
    ref, _ = ple_runtime.forward(spec, x)
    assert rel_err(ple_runtime.Model(tmp_path / "a.ple").predict(x), ref) <= 1e-5
    half, rounded = ple_runtime.Model(tmp_path / "h.ple"), ple_runtime.Model(tmp_path / "r.ple")
    assert half.dtype == "f16" and rounded.dtype == "f32"
    a, ga = half.predict(x, gates=True)
    b, gb = rounded.predict(x, gates=True)
    assert rel_err(a, b) <= 1e-5 and rel_err(ga, gb) <= 1e-5
    assert 0 < rel_err(a, ref) < 1e-2


def test_introspection(model):
    assert model.name == "full" and model.dtype == "f32" and model.task_count == 2
    assert model.simd_level in ("scalar", "avx2", "avx512", "neon")
    assert model.input_names == ["user", "item", "hist_mean", "hist_max", "age", "vec"]
    user, item, hist_mean, hist_max, age, vec = model.inputs
    assert (user.kind, user.vocab_size, user.width, user.values_per_sample, user.shape) == ("sparse", 20, 4, 1, ())
    assert (hist_mean.kind, hist_mean.max_len, hist_mean.pooling, hist_mean.pad_id) == ("sequence", 5, "mean", 0)
    assert hist_max.pooling == "max" and hist_max.shape == (3,)
    assert (vec.kind, vec.width, vec.vocab_size, vec.pooling, vec.pad_id) == ("dense", 3, 0, None, None)
    assert model.output_names == ["ctr", "vec_out"] and model.output_width == 4
    assert [(o.offset, o.len) for o in model.outputs] == [(0, 1), (1, 3)]
    assert model.gate_names == ["level0.task0", "level0.task1", "level0.shared", "level1.task0", "level1.task1"]
    assert model.gate_width == 3 + 3 + 5 + 3 + 3
    assert model.input("vec") is vec
    assert "sequence int64 [B, 5]" in model.describe() and "full" in repr(model)
    assert ple_runtime.library_version() == _native.version() and ple_runtime.simd_level()
    assert os.path.isfile(ple_runtime.library_path())


def test_split(model, x):
    out, gates = model.predict(x, gates=True)
    parts = model.split(out)
    assert parts["ctr"].shape == (41, 1) and parts["vec_out"].shape == (41, 3)
    g = model.split_gates(gates)
    assert g["level0.shared"].shape == (41, 5)
    assert np.allclose(g["level0.task0"].sum(axis=1), 1.0, atol=1e-6)


def test_input_conversions(model, x):
    """Ids of any integer dtype (or whole floats), [B, 1] sparse, [B] dense of width 1,
    non-contiguous and byte-swapped arrays all score the same."""
    want = model.predict(x)
    y = dict(x)
    y["user"] = x["user"].astype(np.int32)
    y["item"] = x["item"].astype(np.float64)  # whole numbers in a float array
    y["hist_mean"] = np.asfortranarray(x["hist_mean"]).astype(">i8")
    y["hist_max"] = np.concatenate([x["hist_max"], x["hist_max"]], axis=1)[:, :3]  # a non-contiguous view
    y["age"] = x["age"].reshape(-1).astype(np.float64)
    y["user"] = y["user"].reshape(-1, 1)
    assert np.array_equal(model.predict(y), want)
    assert np.array_equal(model.predict({k: x[k] for k in reversed(list(x))}), want)  # any order


def test_chunked_scoring_matches(path, x):
    want = ple_runtime.Model(path).predict(x, gates=True)
    small = ple_runtime.Model(path, max_batch=4)
    got = small.predict(x, gates=True)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    bad = dict(x, user=x["user"].copy())
    bad["user"][9] = 20
    with pytest.raises(PleError, match=r"sample 1, position 0: id 20.*chunk of samples 8\.\.11"):
        small.predict(bad)


def test_threads_share_a_model(model, spec):
    batches = [inputs_for(spec, np.random.default_rng(100 + i), batch=17 + i) for i in range(6)]
    want = [model.predict(b) for b in batches]
    got = [None] * len(batches)
    errors = []

    def work(i):
        try:
            for _ in range(20):
                got[i] = model.predict(batches[i])
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_batch_zero(model, x):
    """Batch 0 returns empty arrays, and is still validated by the library (names, count, lengths)."""
    empty = {k: v[:0] for k, v in x.items()}
    out, gates = model.predict(empty, gates=True)
    assert out.shape == (0, 4) and gates.shape == (0, model.gate_width)
    assert model.predict(empty).shape == (0, 4)
    with pytest.raises(PleError, match=r"unknown inputs \['nope'\]"):
        model.predict({**empty, "nope": np.zeros(0)})
    with pytest.raises(PleError, match=r"missing inputs \['vec'\]"):
        model.predict({k: v for k, v in empty.items() if k != "vec"})
    with pytest.raises(PleError, match="no input named 'Vec'") as info:
        model.predict({("Vec" if k == "vec" else k): v for k, v in empty.items()})
    assert info.value.status_name == "PLE_STATUS_UNKNOWN_INPUT"


def _raises(model, inputs, status, *patterns):
    with pytest.raises(PleError) as info:
        model.predict(inputs)
    err = info.value
    assert err.status_name == status, str(err)
    assert err.detail and err.detail in str(err)
    assert err.description == _native.status_str(err.status)
    for p in patterns:
        assert p in str(err), f"{p!r} not in {str(err)!r}"
    return err


def test_bad_ids(model, x):
    y = dict(x, user=x["user"].copy())
    y["user"][3] = 20
    err = _raises(model, y, "PLE_STATUS_ID_OUT_OF_RANGE", "input 'user', sample 3, position 0: id 20",
                  "table has 20 rows")
    assert err.status == 25
    y = dict(x, user=x["user"].copy())
    y["user"][0] = -1
    _raises(model, y, "PLE_STATUS_ID_OUT_OF_RANGE", "input 'user', sample 0", "id -1")
    y = dict(x, hist_max=x["hist_max"].copy())
    y["hist_max"][7, 2] = 10**12
    _raises(model, y, "PLE_STATUS_ID_OUT_OF_RANGE", "input 'hist_max', sample 7, position 2")
    y = dict(x, user=x["user"] + 0.5)  # fractional "ids": refused in Python, naming the row
    with pytest.raises(ValueError, match=r"input 'user', row 0: .* is not an id"):
        model.predict(y)


def test_bad_names(model, x):
    _raises(model, {k: v for k, v in x.items() if k != "age"}, "PLE_STATUS_WRONG_INPUT_COUNT",
            "missing inputs ['age']")
    _raises(model, {**x, "extra": x["age"]}, "PLE_STATUS_WRONG_INPUT_COUNT", "unknown inputs ['extra']")
    y = {("Age" if k == "age" else k): v for k, v in x.items()}
    _raises(model, y, "PLE_STATUS_UNKNOWN_INPUT", "no input named 'Age'")
    with pytest.raises(TypeError, match="dict"):
        model.predict(np.zeros((3, 8), np.float32))
    with pytest.raises(TypeError, match="names must be strings"):
        model.predict({0: x["age"]})


def test_bad_shapes(model, x):
    # Short sequences are padded with the pad id (test_inputs.py); too long is the library's error.
    _raises(model, dict(x, hist_mean=np.concatenate([x["hist_mean"], x["hist_mean"][:, :1]], axis=1)),
            "PLE_STATUS_WRONG_LENGTH", "input 'hist_mean' has length 246, expected 205", "shape (41, 6)")
    _raises(model, dict(x, vec=x["vec"][:, :2]), "PLE_STATUS_WRONG_LENGTH", "input 'vec'")
    _raises(model, dict(x, item=x["item"][:40]), "PLE_STATUS_WRONG_LENGTH", "input 'item'", "batch 41")
    # same number of values, wrong layout: only Python can see it
    with pytest.raises(ValueError, match=r"'hist_mean': array of shape \(5, 41\), expected \(41, 5\)"):
        model.predict(dict(x, hist_mean=np.ascontiguousarray(x["hist_mean"].T)))
    # All scalars is one sample; 'vec' is 3 wide, so one value is the wrong length.
    _raises(model, {k: np.int64(1) for k in x}, "PLE_STATUS_WRONG_LENGTH", "input 'vec'")


def test_nan_in_dense_inputs_is_not_an_error(model, x):
    """Policy: dense inputs are not checked; NaN/inf are scored like any value and only the
    samples holding them are affected (their gate weights become NaN)."""
    clean, clean_gates = model.predict(x, gates=True)
    y = dict(x, vec=x["vec"].copy(), age=x["age"].copy())
    y["vec"][4, 1] = np.nan
    y["age"][9, 0] = np.inf
    out, gates = model.predict(y, gates=True)
    others = np.ones(41, bool)
    others[[4, 9]] = False
    assert np.array_equal(out[others], clean[others]) and np.array_equal(gates[others], clean_gates[others])
    assert np.isnan(gates[4]).any()


def test_dense_only_model_takes_an_array(tmp_path):
    rng = np.random.default_rng(0)
    spec = {"name": "dense", "features": [{"name": "emb", "kind": "dense", "width": 6}],
            "levels": [{"task_experts": [[[layer(rng, 4, 6)]], [[layer(rng, 4, 6)]]],
                        "shared_experts": [[layer(rng, 4, 6)]],
                        "task_gates": [[layer(rng, 2, 6, "identity")] for _ in range(2)]}],
            "towers": [{"mlp": [layer(rng, 1, 4, "identity", bn=False)]} for _ in range(2)]}
    ple_runtime.write(spec, tmp_path / "d.ple")
    m = ple_runtime.Model(tmp_path / "d.ple")
    arr = rng.normal(size=(9, 6)).astype(np.float32)
    out, gates = m.predict(arr, gates=True)
    ref, ref_gates = ple_runtime.forward(spec, {"emb": arr})
    assert rel_err(out, ref) <= 1e-5 and rel_err(gates, ref_gates) <= 1e-5
    assert np.array_equal(out, m.predict({"emb": arr}))
    assert m.predict(arr[:0]).shape == (0, 2)
    _raises(m, {"emb": arr[:, :5]}, "PLE_STATUS_WRONG_LENGTH", "'emb'")
    with pytest.raises(PleError, match="WRONG_LENGTH|length"):
        m.predict(arr[:, :5])


def test_open_errors(tmp_path, path):
    with pytest.raises(PleError, match="nope.ple") as info:
        ple_runtime.Model(tmp_path / "nope.ple")
    assert info.value.status_name == "PLE_STATUS_IO"
    (tmp_path / "junk.ple").write_bytes(b"not a model at all, not a model at all, not a model at all....")
    with pytest.raises(PleError) as info:
        ple_runtime.Model(tmp_path / "junk.ple")
    assert info.value.status_name == "PLE_STATUS_NOT_PLE"
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0xFF
    (tmp_path / "bad.ple").write_bytes(bytes(data))
    ple_runtime.Model(tmp_path / "bad.ple")  # the data checksum is checked only on request
    with pytest.raises(PleError) as info:
        ple_runtime.Model(tmp_path / "bad.ple", verify_data=True)
    assert info.value.status_name == "PLE_STATUS_CHECKSUM"
    with pytest.raises(ValueError, match="max_batch"):
        ple_runtime.Model(path, max_batch=0)


def test_from_bytes_and_close(path, x):
    data = open(path, "rb").read()
    m = ple_runtime.Model.from_bytes(data)
    want = ple_runtime.Model(path, in_memory=True, verify_data=True).predict(x)
    assert np.array_equal(m.predict(x), want)
    m.close()
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m.predict(x)


def test_library_lookup_order(monkeypatch, tmp_path):
    monkeypatch.setenv("PLE_EXTENSION", "/x/lib_ple.so")
    monkeypatch.setenv("CARGO_TARGET_DIR", "/y")
    c = _native.candidates()
    assert c[0] == "/x/lib_ple.so"
    assert c[1].endswith(os.path.join("target", "release", "lib_ple.so"))
    assert c[2].endswith(os.path.join("target", "debug", "lib_ple.so"))
    assert c[3:] == [os.path.join("/y", "release", "lib_ple.so"), os.path.join("/y", "debug", "lib_ple.so")]


def _run_python(code, **env):
    full = {k: v for k, v in os.environ.items() if k != "PLE_EXTENSION"}
    full.update(env)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(ple_runtime.__file__)))
    full["PYTHONPATH"] = pkg + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full)


def test_library_env_variables(tmp_path):
    lib = ple_runtime.library_path()
    r = _run_python("import ple_runtime; print(ple_runtime.library_path())",
                    PLE_EXTENSION=str(tmp_path / "missing.so"))
    assert r.returncode != 0 and "PLE_EXTENSION=" in r.stderr and "no such file" in r.stderr
    r = _run_python("import ple_runtime; print(ple_runtime.library_path())", PLE_EXTENSION=lib)
    assert r.returncode == 0 and r.stdout.strip() == lib, r.stderr
    # Without the extension the package still imports, and so do its pure-Python parts; only
    # scoring says how to get it.
    r = _run_python("import ple_runtime, ple_runtime.writer, ple_runtime.spec, ple_runtime.reference\n"
                    "try:\n    ple_runtime.Model('x.ple')\nexcept ple_runtime.LibraryNotFound as e:\n"
                    "    print('missing:', e)", PLE_EXTENSION=str(tmp_path / "missing.so"))
    assert r.returncode == 0 and "missing: PLE_EXTENSION=" in r.stdout, r.stderr


def test_pool_threads_are_bit_identical(tmp_path, spec):
    """A model on a pool (private or shared) splits batches across threads and scores exactly as
    one thread does; the pool's handle and the models may be released in any order."""
    path = tmp_path / "m.ple"
    ple_runtime.write(spec, path)
    x = inputs_for(spec, np.random.default_rng(21), batch=300)
    with ple_runtime.Model(path) as one:
        want, want_gates = one.predict(x, gates=True)
        assert one.threads == 1
    # min_parallel_batch=0: split every batch that can be (the test model is far below the default threshold).
    with ple_runtime.Model(path, threads=2, min_parallel_batch=0) as two:
        assert two.threads == 2
        got, gates = two.predict(x, gates=True)
        assert np.array_equal(got, want) and np.array_equal(gates, want_gates)
    pool = ple_runtime.Pool(2, spin_us=0)
    assert pool.threads == 2 and "2 threads" in repr(pool)
    a = ple_runtime.Model(path, pool=pool, min_parallel_batch=0)
    b = ple_runtime.Model(path, pool=pool, min_parallel_batch=0)
    assert a.threads == b.threads == 2
    pool.close()  # the models' sessions hold their own references
    results = [None, None]

    def work(i, m):
        results[i] = [m.predict(x) for _ in range(10)]

    workers = [threading.Thread(target=work, args=(i, m)) for i, m in enumerate((a, b))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert all(np.array_equal(r, want) for rs in results for r in rs)
    a.close()
    b.close()


def test_pool_arguments_are_checked(tmp_path, spec):
    path = tmp_path / "m.ple"
    ple_runtime.write(spec, path)
    with pytest.raises(ValueError, match="threads must be an integer >= 0"):
        ple_runtime.Pool(-1)
    with pytest.raises(PleError, match="1024"):
        ple_runtime.Pool(5000)
    pool = ple_runtime.Pool(2)
    with pytest.raises(ValueError, match="not both"):
        ple_runtime.Model(path, threads=2, pool=pool)
    with pytest.raises(TypeError, match="ple_runtime.Pool"):
        ple_runtime.Model(path, pool=2)
    pool.close()
    with pytest.raises(ValueError, match="the pool is closed"):
        ple_runtime.Model(path, pool=pool)
    with pytest.raises(ValueError, match="min_parallel_batch"):
        ple_runtime.Model(path, min_parallel_batch=-3)
