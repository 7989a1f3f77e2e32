"""Load measurement of the MLServer runtime (docs/SERVING.md, "Overhead"): requests/s and
p50 / p99 latency at 1, 8 and 32 concurrent clients, single-sample and 256-candidate requests,
over V2 REST and gRPC, against the in-process Python call (Model.predict); and where the time
goes inside the server (request decoding, scoring, response encoding), timed in-process.

    /work/venv/bin/python benches/serving/bench.py [--seconds 3] [--workers 1] [--out FILE]

Needs torch and torch-rechub (the "criteo" model of benches/compare is built with them and
exported), mlserver 1.7.1, a release libple (cargo build --release -p ple-runtime --lib).
The clients run in this process (threads, keep-alive connections, request bodies encoded once)
on the same machine as the server: on a small machine they compete with it for the CPUs, so
the figures are what one machine does end to end, not the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "benches" / "compare"))

import driver  # noqa: E402  (benches/compare: the "criteo" model)
import ple_runtime  # noqa: E402
from ple_runtime import export_torch  # noqa: E402

CONCURRENCY = (1, 8, 32)
BATCHES = (1, 256)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(work: Path) -> tuple[Path, dict]:
    feat_model, _, feats, vocabs, _ = driver.build_models("criteo", driver.MODELS["criteo"], 1)
    path = work / "criteo" / "model.ple"
    path.parent.mkdir(parents=True)
    export_torch.export(feat_model, path, dtype="f32", name="criteo")
    rng = np.random.default_rng(2)
    return path, {b: driver.make_inputs(feats, vocabs, b, rng) for b in BATCHES}


def v2_body(model: ple_runtime.Model, x: dict) -> dict:
    return {"inputs": [{"name": k, "datatype": "FP32" if model.input(k).kind == "dense" else "INT64",
                        "shape": list(v.shape), "data": v.reshape(-1).tolist()} for k, v in x.items()]}


def start_server(repo: Path, workers: int):
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    (repo / "settings.json").write_text(json.dumps({**ports, "host": "127.0.0.1", "parallel_workers": workers,
                                                    "debug": False, "logging_level": "WARNING"}))
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    log = open(repo / "mlserver.log", "w")
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "mlserver"), "start", str(repo)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            cwd=repo)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            c = http.client.HTTPConnection("127.0.0.1", ports["http_port"], timeout=2)
            c.request("GET", "/v2/models/criteo/ready")
            if c.getresponse().status == 200:
                return proc, ports
        except OSError:
            pass
        time.sleep(0.25)
    stop_server(proc)
    raise SystemExit(f"mlserver did not start; see {repo / 'mlserver.log'}")


def stop_server(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def rest_client(port: int, body: bytes):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call():
        conn.request("POST", "/v2/models/criteo/infer", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(data[:300])
        return data
    return call


def grpc_client(port: int, request):
    import grpc
    from mlserver.grpc import dataplane_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)
    return lambda: stub.ModelInfer(request, timeout=60)


def load(make_client, clients: int, seconds: float) -> dict:
    """Closed loop: `clients` threads each send requests back to back for `seconds` (after one
    warm-up request each); latencies of every request."""
    calls = [make_client() for _ in range(clients)]
    for c in calls:
        c()
    lat: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    stop = threading.Event()

    def run(i):
        barrier.wait()
        while not stop.is_set():
            t0 = time.perf_counter()
            calls[i]()
            lat[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    all_lat = np.concatenate([np.asarray(v) for v in lat]) * 1e3
    return {"rps": len(all_lat) / wall, "p50_ms": float(np.percentile(all_lat, 50)),
            "p99_ms": float(np.percentile(all_lat, 99)), "n": int(len(all_lat))}


def timed(f, min_s: float = 0.3, reps: int = 7) -> float:
    """Median µs per call over `reps` repetitions of at least `min_s` each."""
    f()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < min_s / 3 or n < 3:
        f()
        n += 1
    per = max(1, int(min_s / ((time.perf_counter() - t0) / n)))
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(per):
            f()
        out.append((time.perf_counter() - t0) * 1e6 / per)
    return float(np.median(out))


def breakdown(path: Path, model: ple_runtime.Model, inputs: dict) -> dict:
    """In-process µs per request: JSON -> InferenceRequest (what MLServer's REST layer does), the
    runtime's predict (decoding + Model.predict + response objects), Model.predict alone, and
    InferenceResponse -> JSON; and the protobuf <-> types conversions of the gRPC path."""
    from mlserver.grpc.converters import ModelInferRequestConverter, ModelInferResponseConverter
    from mlserver.settings import ModelParameters, ModelSettings
    from mlserver.types import InferenceRequest

    from ple_runtime.mlserver import PleModel

    settings = ModelSettings(name="criteo", implementation=PleModel, parameters=ModelParameters(uri=str(path)))
    runtime = PleModel(settings)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(runtime.load())
    out = {}
    for b, x in inputs.items():
        body = json.dumps(v2_body(model, x)).encode()
        req = InferenceRequest.model_validate_json(body)
        resp = loop.run_until_complete(runtime.predict(req))
        pb_req = ModelInferRequestConverter.from_types(req, model_name="criteo")
        pb_bytes = pb_req.SerializeToString()
        pb_resp = ModelInferResponseConverter.from_types(resp)
        out[b] = {
            "json_decode_us": timed(lambda: InferenceRequest.model_validate_json(body)),
            "runtime_predict_us": timed(lambda: loop.run_until_complete(runtime.predict(req))),
            "model_predict_us": timed(lambda: model.predict(x)),
            "json_encode_us": timed(lambda: resp.model_dump_json()),
            "grpc_decode_us": timed(lambda: ModelInferRequestConverter.to_types(
                type(pb_req).FromString(pb_bytes))),
            "grpc_encode_us": timed(lambda: ModelInferResponseConverter.from_types(resp).SerializeToString()),
            "request_bytes_json": len(body), "request_bytes_grpc": len(pb_bytes),
            "response_bytes_grpc": len(pb_resp.SerializeToString()),
        }
    loop.run_until_complete(runtime.unload())
    loop.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per load level (default 3)")
    ap.add_argument("--workers", type=int, default=1, help="MLServer parallel_workers (default 1)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--render", type=Path, help="print the tables of a --out file and exit")
    args = ap.parse_args()
    if args.render:
        print(markdown(json.loads(args.render.read_text())))
        return 0

    from mlserver.types import InferenceRequest
    from mlserver.grpc.converters import ModelInferRequestConverter

    with tempfile.TemporaryDirectory(prefix="ple-serving-") as tmp:
        work = Path(tmp)
        path, inputs = build_model(work)
        (work / "criteo" / "model-settings.json").write_text(json.dumps(
            {"name": "criteo", "implementation": "ple_runtime.mlserver.PleModel",
             "parameters": {"uri": "./model.ple"}}))
        model = ple_runtime.Model(path)
        results = {"cpu": driver.cpu_model(), "simd": model.simd_level, "python": platform.python_version(),
                   "workers": args.workers, "seconds": args.seconds, "inproc": {}, "rest": {}, "grpc": {},
                   "breakdown": breakdown(path, model, inputs)}
        for b, x in inputs.items():
            results["inproc"][b] = {"model_predict_us": timed(lambda: model.predict(x))}
        proc, ports = start_server(work, args.workers)
        try:
            for b, x in inputs.items():
                body = v2_body(model, x)
                raw = json.dumps(body).encode()
                pb = ModelInferRequestConverter.from_types(InferenceRequest.model_validate(body), model_name="criteo")
                for c in CONCURRENCY:
                    r = load(lambda: rest_client(ports["http_port"], raw), c, args.seconds)
                    results["rest"][f"{b}/{c}"] = r
                    print(f"REST b={b:<3} c={c:<2} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                          f"p99 {r['p99_ms']:7.2f} ms", flush=True)
                    g = load(lambda: grpc_client(ports["grpc_port"], pb), c, args.seconds)
                    results["grpc"][f"{b}/{c}"] = g
                    print(f"gRPC b={b:<3} c={c:<2} {g['rps']:8.0f} req/s  p50 {g['p50_ms']:7.2f} ms  "
                          f"p99 {g['p99_ms']:7.2f} ms", flush=True)
        finally:
            stop_server(proc)
        for b in BATCHES:
            print(f"in-process b={b}: Model.predict {results['inproc'][b]['model_predict_us']:.1f} µs; "
                  f"breakdown {results['breakdown'][b]}")
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return 0


def markdown(r: dict) -> str:
    """The tables of docs/SERVING.md, "Overhead"."""
    lines = [f"{r['cpu']}, libple {r['simd']}, Python {r['python']}, parallel_workers {r['workers']}, "
             f"{r['seconds']:g} s per level; clients on the same machine.", "",
             "| request | clients | REST req/s | REST p50 / p99 ms | gRPC req/s | gRPC p50 / p99 ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for b in BATCHES:
        for c in CONCURRENCY:
            x, g = r["rest"][f"{b}/{c}"], r["grpc"][f"{b}/{c}"]
            lines.append(f"| {b} sample{'s' if b > 1 else ''} | {c} | {x['rps']:,.0f} | {x['p50_ms']:.2f} / "
                         f"{x['p99_ms']:.2f} | {g['rps']:,.0f} | {g['p50_ms']:.2f} / {g['p99_ms']:.2f} |")
    lines += ["", "| request | Model.predict in process | runtime predict (decode + score + response) | "
              "JSON -> request | response -> JSON | protobuf -> request | response -> protobuf |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for b in BATCHES:
        d = r["breakdown"][b] if b in r["breakdown"] else r["breakdown"][str(b)]
        lines.append(f"| {b} | {d['model_predict_us']:.0f} µs | {d['runtime_predict_us']:.0f} µs | "
                     f"{d['json_decode_us']:.0f} µs | {d['json_encode_us']:.0f} µs | {d['grpc_decode_us']:.0f} µs | "
                     f"{d['grpc_encode_us']:.0f} µs |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
