"""The MLServer runtime (ple_runtime.mlserver) in a real `mlserver start` process on localhost:
metadata from the file, REST and gRPC round trips equal to Model.predict bit for bit (padded,
short and ragged sequences, gates), V2 error responses naming the input and sample, adaptive
batching under 16 concurrent clients, and a hot reload under load with no failed request.

The server runs MLServer's default worker pool (one worker process: docs/SERVING.md, "Worker
pool", for why uvloop is pinned). Ports are chosen free at run time; every request loop is
bounded; the server is always stopped. Skipped when mlserver is not installed, unless
PLE_REQUIRE_MLSERVER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import ple_runtime
from _util import full_spec, inputs_for
from ple_runtime import _native

try:
    _native.lib()
except ple_runtime.LibraryNotFound as exc:  # pragma: no cover - CI builds the library first
    pytest.skip(f"libple not found: {exc}", allow_module_level=True)

if os.environ.get("PLE_REQUIRE_MLSERVER") == "1":
    import mlserver  # noqa: F401  (a missing mlserver fails here)
else:
    pytest.importorskip("mlserver")

import grpc  # noqa: E402  (installed with mlserver)
from mlserver import types  # noqa: E402
from mlserver.grpc import dataplane_pb2_grpc  # noqa: E402
from mlserver.grpc.converters import ModelInferRequestConverter, ModelInferResponseConverter  # noqa: E402

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_DIR = os.path.dirname(PYTHON_DIR)
MLSERVER = os.path.join(os.path.dirname(sys.executable), "mlserver")
START_TIMEOUT = 180  # s: a loaded 2-core CI machine starts the server and its worker in ~10 s
REQUEST_TIMEOUT = 60  # s, per request
MAX_BATCH_TIME = 0.1  # s: adaptive batching window of the "batched" model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_model(path, seed):
    spec = full_spec(np.random.default_rng(seed))
    tmp = str(path) + ".tmp"
    ple_runtime.write(spec, tmp)
    os.replace(tmp, path)  # how a new version is published: the old file stays mapped
    return spec


class Server:
    """`mlserver start REPO` in its own process group, on free ports."""

    def __init__(self, repo, log_path, models=("full", "batched", "swap")):
        self.repo, self.log_path, self.models = repo, log_path, models
        self.proc = None

    def start(self):
        for attempt in range(3):  # a port taken between choosing and binding: try new ones
            self.http, self.grpc, self.metrics = _free_port(), _free_port(), _free_port()
            settings_path = os.path.join(self.repo, "settings.json")
            settings = {"parallel_workers": 1, "debug": False}
            if os.path.exists(settings_path):
                with open(settings_path) as fh:
                    settings = json.load(fh)
            settings.update(http_port=self.http, grpc_port=self.grpc, metrics_port=self.metrics, host="127.0.0.1")
            with open(settings_path, "w") as fh:
                json.dump(settings, fh)
            env = dict(os.environ, PYTHONPATH=PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
            self.log = open(self.log_path, "w")
            self.proc = subprocess.Popen([MLSERVER, "start", self.repo], stdout=self.log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True,
                                         cwd=os.path.dirname(self.log_path))  # its .metrics/ goes there
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._ready():
                    return
                time.sleep(0.25)
            self.stop()
            if "address already in use" not in self.read_log().lower():
                break
        pytest.fail(f"mlserver did not become ready in {START_TIMEOUT} s; its log:\n{self.read_log()[-4000:]}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v2/health/ready", timeout=2) as r:
                if r.status != 200:
                    return False
            for name in self.models:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v2/models/{name}/ready", timeout=2) as r:
                    if r.status != 200:
                        return False
            return True
        except (OSError, urllib.error.URLError):
            return False

    def read_log(self) -> str:
        try:
            with open(self.log_path) as fh:
                return fh.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=30)
        self.log.close()
        self.proc = None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("mlserver_repo")
    specs = {}
    for name, seed, extra in (("full", 41, {}), ("batched", 41, {}), ("swap", 42, {})):
        d = repo / name
        d.mkdir()
        specs[name] = _write_model(d / "model.ple", seed)
        settings = {"name": name, "implementation": "ple_runtime.mlserver.PleModel",
                    "parameters": {"uri": "./model.ple", "extra": extra}}
        if name == "batched":
            settings.update(max_batch_size=16, max_batch_time=MAX_BATCH_TIME)
        (d / "model-settings.json").write_text(json.dumps(settings))
    srv = Server(str(repo), str(tmp_path_factory.mktemp("mlserver_log") / "mlserver.log"))
    srv.start()
    srv.specs = specs
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def model(server):
    with ple_runtime.Model(os.path.join(server.repo, "full", "model.ple")) as m:
        yield m


def _post(server, path, body, timeout=REQUEST_TIMEOUT):
    """(status, decoded JSON body)."""
    req = urllib.request.Request(f"http://127.0.0.1:{server.http}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _get(server, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http}{path}", timeout=REQUEST_TIMEOUT) as r:
        return json.loads(r.read())


def _tensor(model, name, arr):
    info = model.input(name)
    datatype = "FP32" if info.kind == "dense" else "INT64"
    arr = np.asarray(arr, dtype=np.float32 if datatype == "FP32" else np.int64)
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": arr.reshape(-1).tolist()}


def _request(model, x, outputs=None):
    body = {"inputs": [_tensor(model, name, arr) for name, arr in x.items()]}
    if outputs is not None:
        body["outputs"] = [{"name": n} for n in outputs]
    return body


def _outputs(body) -> dict:
    return {o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"]) for o in body["outputs"]}


# ---------------------------------------------------------------------------- metadata


def test_metadata_lists_inputs_and_outputs_from_the_file(server, model):
    meta = _get(server, "/v2/models/full")
    assert meta["platform"] == "ple"
    got = {t["name"]: t for t in meta["inputs"]}
    assert list(got) == model.input_names
    for info in model.inputs:
        t = got[info.name]
        if info.kind == "dense":
            assert (t["datatype"], t["shape"]) == ("FP32", [-1, info.width])
        elif info.kind == "sparse":
            assert (t["datatype"], t["shape"]) == ("INT64", [-1])
            assert t["parameters"]["vocab_size"] == info.vocab_size
        else:
            assert (t["datatype"], t["shape"]) == ("INT64", [-1, info.max_len])
            assert t["parameters"]["pad_id"] == info.pad_id and t["parameters"]["pooling"] == info.pooling
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == \
        [(o.name, "FP32", [-1, o.len]) for o in model.outputs]


# ---------------------------------------------------------------------------- round trips


def test_rest_round_trip_equals_predict_bit_for_bit(server, model):
    x = inputs_for(server.specs["full"], np.random.default_rng(5), batch=23)
    want, want_gates = model.predict(x, gates=True)
    status, body = _post(server, "/v2/models/full/infer", _request(model, x))
    assert status == 200, body
    got = _outputs(body)
    assert list(got) == model.output_names
    for o in model.outputs:
        np.testing.assert_array_equal(got[o.name], want[:, o.offset:o.offset + o.len])
    assert body["parameters"]["ple_batch_size"] == 23
    # Gates, asked for by name, with one task output.
    names = ["vec_out"] + ["gate." + g.name for g in model.gates]
    status, body = _post(server, "/v2/models/full/infer", _request(model, x, outputs=names))
    assert status == 200, body
    got = _outputs(body)
    assert list(got) == names
    for g in model.gates:
        np.testing.assert_array_equal(got["gate." + g.name], want_gates[:, g.offset:g.offset + g.len])


def test_short_and_ragged_sequences(server, model):
    x = inputs_for(server.specs["full"], np.random.default_rng(6), batch=7)
    want = model.predict(x)
    seq = [i.name for i in model.inputs if i.kind == "sequence"]
    # Ragged: BYTES [B], one JSON list per sample (the padding dropped), padded by the server.
    status, resp = _post(server, "/v2/models/full/infer", _ragged(model, _request(model, x), x))
    assert status == 200, resp
    np.testing.assert_array_equal(np.concatenate(list(_outputs(resp).values()), axis=1), want)
    # Short: [B, L] with L < max_len, padded on the right by the server.
    short = dict(x)
    for name in seq:
        short[name] = x[name][:, :model.input(name).max_len - 1]
    status, resp = _post(server, "/v2/models/full/infer", _request(model, short))
    assert status == 200, resp
    np.testing.assert_array_equal(np.concatenate(list(_outputs(resp).values()), axis=1), model.predict(short))


def _grpc_infer(server, request: types.InferenceRequest, model_name="full", use_raw=False):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc}") as channel:
        stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)
        pb = ModelInferRequestConverter.from_types(request, model_name=model_name, use_raw=use_raw)
        return ModelInferResponseConverter.to_types(stub.ModelInfer(pb, timeout=REQUEST_TIMEOUT))


@pytest.mark.parametrize("use_raw", [False, True], ids=["typed_contents", "raw_contents"])
def test_grpc_round_trip_equals_predict_bit_for_bit(server, model, use_raw):
    x = inputs_for(server.specs["full"], np.random.default_rng(7), batch=17)
    want = model.predict(x)
    request = types.InferenceRequest.model_validate(_request(model, x))
    response = _grpc_infer(server, request, use_raw=use_raw)
    assert [o.name for o in response.outputs] == model.output_names
    for o, out in zip(model.outputs, response.outputs):
        data = np.asarray(getattr(out.data, "root", out.data), dtype=np.float32).reshape(out.shape)
        np.testing.assert_array_equal(data, want[:, o.offset:o.offset + o.len])


# ---------------------------------------------------------------------------- errors


def test_error_responses_name_the_input_and_sample(server, model):
    x = inputs_for(server.specs["full"], np.random.default_rng(8), batch=4)
    bad = dict(x, user=np.array([0, 1, 2, 20]))  # the table has 20 rows
    status, body = _post(server, "/v2/models/full/infer", _request(model, bad))
    assert status == 400
    assert "input 'user', sample 3" in body["error"] and "out of range" in body["error"]
    with pytest.raises(ple_runtime.PleError) as e:  # the same message as the Python API
        model.predict(bad)
    assert str(e.value) in body["error"]

    missing = {k: v for k, v in x.items() if k != "vec"}
    status, body = _post(server, "/v2/models/full/infer", _request(model, missing))
    assert status == 400 and "missing inputs ['vec']" in body["error"]

    status, body = _post(server, "/v2/models/full/infer", _request(model, x, outputs=["nope"]))
    assert status == 400 and "output 'nope'" in body["error"]

    req = _request(model, x)
    req["inputs"][0]["shape"] = [5]  # 4 values
    status, body = _post(server, "/v2/models/full/infer", req)
    assert status == 400 and "4 values for shape [5]" in body["error"]

    req = _request(model, x)
    seq = next(t for t in req["inputs"] if model.input(t["name"]).kind == "sequence")
    seq.update(datatype="BYTES", shape=[4], data=["[1, 2]", "[3]", "oops", "[]"])
    status, body = _post(server, "/v2/models/full/infer", req)
    assert status == 400 and f"input {seq['name']!r}, sample 2" in body["error"]

    too_long = json.dumps([1] * (model.input(seq["name"]).max_len + 1))
    seq.update(data=["[1]", too_long, "[]", "[2]"])
    status, body = _post(server, "/v2/models/full/infer", req)
    assert status == 400 and f"input {seq['name']!r}, row 1" in body["error"] and "max_len" in body["error"]

    request = types.InferenceRequest.model_validate(_request(model, bad))
    with pytest.raises(grpc.RpcError) as e:
        _grpc_infer(server, request)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'user', sample 3" in e.value.details()


# ---------------------------------------------------------------------------- adaptive batching


def _ragged(model, body, x):
    """The request with every sequence as BYTES [B], one JSON list per sample, padding dropped."""
    for t in body["inputs"]:
        info = model.input(t["name"])
        if info.kind == "sequence":
            rows = [[int(v) for v in row if v != info.pad_id] for row in x[t["name"]]]
            t.update(datatype="BYTES", shape=[len(rows)], data=[json.dumps(r) for r in rows])
    return body


@pytest.mark.parametrize("form", ["padded", "ragged"])
def test_adaptive_batching_16_concurrent_clients(server, model, form):
    """16 threads send single-sample requests at the same moment, 4 rounds: each caller gets
    its own row, and the server scored them in merged batches (sequences padded INT64, or
    ragged BYTES: merged batches stay aligned either way)."""
    clients, rounds = 16, 4
    x = inputs_for(server.specs["batched"], np.random.default_rng(9 if form == "padded" else 19),
                   batch=clients * rounds)
    want = model.predict(x)  # "batched" holds the same file as "full"
    barrier = threading.Barrier(clients, timeout=REQUEST_TIMEOUT)
    results, errors = {}, []

    def client(c):
        try:
            for r in range(rounds):
                i = r * clients + c
                row = {k: v[i:i + 1] for k, v in x.items()}
                barrier.wait()
                request = _request(model, row)
                if form == "ragged":
                    request = _ragged(model, request, row)
                status, body = _post(server, "/v2/models/batched/infer", request)
                results[i] = (status, body)
        except Exception as exc:  # reported below, never left hanging
            errors.append(repr(exc))
            barrier.abort()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=rounds * REQUEST_TIMEOUT * 2)
    assert not errors, errors
    assert len(results) == clients * rounds
    sizes = []
    for i, (status, body) in sorted(results.items()):
        assert status == 200, body
        got = np.concatenate(list(_outputs(body).values()), axis=1)
        assert got.shape == (1, model.output_width)
        np.testing.assert_array_equal(got[0], want[i], err_msg=f"request {i} got another caller's row")
        sizes.append(body["parameters"]["ple_batch_size"])
    assert max(sizes) > 1, f"no request was batched with another: batch sizes {sizes}"
    assert max(sizes) <= 16


# ---------------------------------------------------------------------------- hot reload


def test_reload_under_load_fails_no_request(server, model):
    """4 clients score the "swap" model in a loop while a new version is published (written
    beside it, renamed over model.ple) and loaded through the model repository API. No request
    fails; each answer is the old or the new version's; after the load returns, the new one."""
    path = os.path.join(server.repo, "swap", "model.ple")
    x = inputs_for(server.specs["swap"], np.random.default_rng(10), batch=5)
    with ple_runtime.Model(path) as old:
        want_old = old.predict(x)
    body = _request(model, x)
    stop, loaded = threading.Event(), threading.Event()
    seen, failures = [], []
    max_requests = 2000  # per client: the loop ends by itself whatever happens

    def client():
        for _ in range(max_requests):
            if stop.is_set():
                return
            after = loaded.is_set()
            try:
                status, resp = _post(server, "/v2/models/swap/infer", body)
            except Exception as exc:
                failures.append(repr(exc))
                continue
            if status != 200:
                failures.append((status, resp))
                continue
            seen.append((after, np.concatenate(list(_outputs(resp).values()), axis=1)))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        t0 = time.monotonic()
        while len(seen) < 20 and time.monotonic() - t0 < REQUEST_TIMEOUT:
            time.sleep(0.01)
        _write_model(path, 43)
        with ple_runtime.Model(path) as new:
            want_new = new.predict(x)
        assert not np.array_equal(want_new, want_old)
        status, resp = _post(server, "/v2/repository/models/swap/load", {})
        assert status == 200, resp
        loaded.set()
        n = len(seen)
        while len(seen) < n + 20 and time.monotonic() - t0 < 2 * REQUEST_TIMEOUT:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=2 * REQUEST_TIMEOUT)
    assert not failures, failures[:5]
    old_n = sum(np.array_equal(out, want_old) for _, out in seen)
    new_n = sum(np.array_equal(out, want_new) for _, out in seen)
    assert old_n + new_n == len(seen), "an answer matched neither version"
    assert old_n > 0 and new_n > 0
    assert all(np.array_equal(out, want_new) for after, out in seen if after), \
        "an answer after the reload came from the old version"


# ---------------------------------------------------------------------------- the example


def test_examples_serving_scores_quickstart(tmp_path):
    """`mlserver start examples/serving` (a copy, on free ports) serves examples/models/quickstart.ple
    and answers examples/serving/request.json with Model.predict's rows, which are the torch
    model's own outputs to 1e-5."""
    examples = os.path.join(REPO_DIR, "examples")
    shutil.copytree(os.path.join(examples, "serving"), tmp_path / "examples" / "serving")
    (tmp_path / "examples" / "models").mkdir()
    shutil.copy(os.path.join(examples, "models", "quickstart.ple"), tmp_path / "examples" / "models")
    srv = Server(str(tmp_path / "examples" / "serving"), str(tmp_path / "mlserver.log"), models=("quickstart",))
    srv.start()
    try:
        with open(os.path.join(examples, "serving", "request.json")) as fh:
            request = json.load(fh)
        status, body = _post(srv, "/v2/models/quickstart/infer", request)
    finally:
        srv.stop()
    assert status == 200, body
    x = {t["name"]: np.asarray(t["data"]).reshape(t["shape"]) for t in request["inputs"]}
    with ple_runtime.Model(os.path.join(examples, "models", "quickstart.ple")) as m:
        want = m.predict(x)
    got = np.concatenate(list(_outputs(body).values()), axis=1)
    np.testing.assert_array_equal(got, want)
    expected = np.load(os.path.join(examples, "models", "quickstart_inputs", "expected.npy"))[:len(got)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
