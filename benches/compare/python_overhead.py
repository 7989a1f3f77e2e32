"""Per-call Python overhead of ``ple_runtime.Model.predict`` (the PyO3 extension) at small batches,
measured in one process, beside ONNX Runtime's Python API on the same torch-rechub models.

For each model and batch, in interleaved rounds:

- ``predict``: ``k`` back-to-back ``Model.predict(inputs)`` calls (a dict of int64 / float32
  arrays, as a caller holding numpy columns passes them), per call;
- native: the same library calls on the same arrays and kind of session, ``k`` of them timed in
  Rust with the GIL released (``Model._core._time_native``): ``predict`` without Python;
- the overhead: the median over rounds of (predict − native), paired within each round;
- ONNX Runtime, Python ``sess.run`` of the same model (exported by torch.onnx), and of the
  identity model with the same inputs (returns its first input: ORT's fixed cost of a call from
  Python, its own per-call work included). ORT's native C-API figures are in the full comparison
  (benches/compare/run.sh).

Models: ``criteo`` of benches/compare (26 sparse + 13 dense features, PLE 2 levels): its dense-input
variant (one input, the concatenated embeddings) and its feature variant (39 inputs); and
``criteo-tiny``, the same inputs with 4-wide embeddings, experts and towers, whose native call takes
a few µs, so that the overhead is not lost in the noise of a 100 µs call on a shared machine.

    python benches/compare/python_overhead.py [--models criteo-tiny,criteo] [--batches 1,16] [--rounds 31] [--ms 20]

Needs torch, torch-rechub, onnx, onnxruntime (tools/python_env.sh) and the extension built
(``cargo build --release -p ple-python``, or the package installed).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import driver  # noqa: E402  (builds the same models as the full comparison)

import ple_runtime  # noqa: E402
from ple_runtime import export_torch  # noqa: E402


# The comparison's models, and criteo's inputs on a tiny network (the overhead depends on the
# inputs, not on the network).
MODELS = {**driver.MODELS, "criteo-tiny": dict(n_sparse=26, n_dense=13, dim=4, tasks=2, levels=1, specific=1,
                                               shared=1, experts=[4], towers=[4])}


def per_call(f, k: int) -> float:
    t0 = time.perf_counter()
    for _ in range(k):
        f()
    return (time.perf_counter() - t0) / k


def calibrate(f, ms: float) -> int:
    k = 1
    while True:
        t = per_call(f, k) * k
        if t * 1e3 >= ms / 4 or k >= 1 << 20:
            return max(1, int(k * ms / max(t * 1e3, 1e-6)))
        k *= 4


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="criteo-tiny,criteo")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--ms", type=float, default=20.0, help="milliseconds per measurement")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    work = Path(tempfile.mkdtemp(prefix="ple-overhead-"))
    rows = []
    for mi, name in enumerate(args.models.split(",")):
        cfg = MODELS[name]
        feat_model, dense_model, feats, vocabs, _ = driver.build_models(name, cfg, args.seed + 100 * mi)
        variants = {f"{name}-dense": (dense_model, ["x"]), f"{name}-features": (feat_model, [f.name for f in feats])}
        rng = np.random.default_rng(args.seed)
        for vname, (model, names) in variants.items():
            d = work / vname
            d.mkdir()
            export_torch.export(model, d / "f32.ple", name=vname)
            ex = driver.make_inputs(feats, vocabs, 4, np.random.default_rng(0))
            example = ex if len(names) > 1 else {"x": driver.x0_of(feat_model, feats, ex)}
            driver.export_onnx(model, names, example, d / "model.onnx")
            driver.overhead_onnx(d / "model.onnx", d / "identity.onnx")
            m = ple_runtime.Model(d / "f32.ple")
            sess, ident = driver.ort_session(d / "model.onnx"), driver.ort_session(d / "identity.onnx")
            out_name = sess.get_outputs()[0].name
            for b in batches:
                raw = driver.make_inputs(feats, vocabs, b, rng)
                x = raw if len(names) > 1 else {"x": driver.x0_of(feat_model, feats, raw)}
                feeds = {n: x[n] for n in names}
                id_feeds = {i.name: x[i.name] for i in ident.get_inputs()}
                np.testing.assert_allclose(m.predict(x), sess.run([out_name], feeds)[0], rtol=1e-4, atol=1e-4)
                fns = {
                    "predict": lambda: m.predict(x),
                    "ort": lambda: sess.run([out_name], feeds),
                    "ort-identity": lambda: ident.run(None, id_feeds),
                }
                ks = {k: calibrate(f, args.ms) for k, f in fns.items()}
                k_nat = ks["predict"]
                samples = {k: [] for k in [*fns, "native", "overhead"]}
                for _ in range(args.rounds):
                    t_py = per_call(fns["predict"], ks["predict"])
                    t_nat = m._core._time_native(x, k_nat)
                    samples["predict"].append(t_py)
                    samples["native"].append(t_nat)
                    samples["overhead"].append(t_py - t_nat)
                    for k in ("ort", "ort-identity"):
                        samples[k].append(per_call(fns[k], ks[k]))
                med = {k: float(np.median(v)) * 1e6 for k, v in samples.items()}
                rows.append((vname, len(names), b, med))
                print(f"{vname} b={b}: " + ", ".join(f"{k} {v:.2f} µs" for k, v in med.items()), flush=True)
    print()
    print(f"Python overhead of `Model.predict` (PyO3 extension) and ONNX Runtime's Python API; "
          f"{platform.python_version()}, numpy {np.__version__}, onnxruntime {__import__('onnxruntime').__version__}, "
          f"ple SIMD {ple_runtime.simd_level()}; medians over {args.rounds} interleaved rounds, µs per call:")
    print()
    print("| model | inputs | batch | ple native | ple `predict` | ple overhead (paired) | ORT Python `run` | "
          "ORT identity model, Python `run` |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for vname, n, b, med in rows:
        print(f"| {vname} | {n} | {b} | {med['native']:.2f} | {med['predict']:.2f} | {med['overhead']:+.2f} | "
              f"{med['ort']:.2f} | {med['ort-identity']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
