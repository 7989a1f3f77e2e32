"""End-to-end check of an installed ple_runtime wheel, as a new user runs docs/EXPORT.md:
export -> verify -> predict -> gate_report (-> plot, when matplotlib is installed), and the `ple`
console script. Run it with the venv's python from outside the checkout, with no cargo on PATH
(.ci/run, "Python wheel"): it fails if the package is not the installed one or if cargo is found.

    python tools/wheel_e2e.py WORK_DIR
"""

import os
import shutil
import subprocess
import sys

import numpy as np

checks = []


def check(name, ok, detail=""):
    checks.append((name, bool(ok)))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def main() -> int:
    work = sys.argv[1]
    os.makedirs(work, exist_ok=True)
    os.chdir(work)
    check("no cargo on PATH", shutil.which("cargo") is None, str(shutil.which("cargo")))

    import ple_runtime

    where = ple_runtime.library_path()
    check("the package and its extension come from site-packages",
          "site-packages" in ple_runtime.__file__ and "site-packages" in where, where)

    import torch
    from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature
    from torch_rechub.models.multi_task import PLE

    torch.manual_seed(0)
    feats = [SparseFeature("user_id", 50, 4), SparseFeature("item_id", 80, 4),
             SequenceFeature("recent_items", 80, 4, pooling="mean", shared_with="item_id", padding_idx=0),
             DenseFeature("price")]
    model = PLE(feats, ["classification", "classification"], n_level=2, n_expert_specific=1, n_expert_shared=1,
                expert_params={"dims": [16, 8]}, tower_params_list=[{"dims": [8]}, {"dims": [8]}]).eval()
    with torch.no_grad():  # weights away from their initial values, BatchNorm statistics included
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)

    # docs/EXPORT.md, "Ten lines"
    ple_runtime.export(model, "model.ple", task_names=["ctr", "cvr"], max_len={"recent_items": 20})
    report = ple_runtime.verify(model, "model.ple")
    check("verify", report.ok, f"worst {report.worst:.3e}")
    m = ple_runtime.Model("model.ple")
    rng = np.random.default_rng(3)
    n = 64
    x = {"user_id": rng.integers(0, 50, n), "item_id": rng.integers(0, 80, n),
         "recent_items": np.where(rng.random((n, 20)) < 0.5, rng.integers(1, 80, (n, 20)), 0),
         "price": rng.normal(size=n).astype(np.float32)}
    scores = m.predict(x)
    ref = ple_runtime.export_torch.run_model(model, x)
    err = float(np.abs(scores - ref).max())
    check("predict equals torch-rechub", scores.shape == (n, 2) and err <= 1e-5, f"max |d| {err:.2e}")
    ragged = {"user_id": 3, "item_id": 7, "recent_items": [5, 6, 7], "price": 0.5}
    one = m.predict(ragged)
    padded = {"user_id": np.array([3]), "item_id": np.array([7]),
              "recent_items": np.array([[5, 6, 7] + [0] * 17]), "price": np.array([0.5], np.float32)}
    check("a single ragged row scores as its padded batch", np.array_equal(one, m.predict(padded)))
    try:
        m.predict({**x, "item_id": x["item_id"] + 80})
        check("an out-of-range id raises PleError", False)
    except ple_runtime.PleError as e:
        check("an out-of-range id raises PleError", e.status_name == "PLE_STATUS_ID_OUT_OF_RANGE", str(e)[:100])

    gates = ple_runtime.gate_report(m, x)
    print(gates)
    check("gate_report", gates.samples == n and gates.levels() == [0, 1] and len(gates.gates) == 5,
          f"{len(gates.gates)} gates, warnings {gates.warnings}")
    if _has("matplotlib"):
        import matplotlib

        matplotlib.use("Agg")
        gates.plot("gates.png")
        check("gate_report().plot()", os.path.getsize("gates.png") > 1000)
    else:
        print("skip gate_report().plot(): matplotlib is not installed")

    ple = shutil.which("ple")
    check("the ple console script is on PATH", ple is not None and os.path.dirname(ple) == os.path.dirname(sys.executable),
          str(ple))
    r = subprocess.run([ple or "ple", "check", "model.ple"], capture_output=True, text=True)
    check("ple check model.ple", r.returncode == 0 and r.stdout.startswith("ok  "), (r.stdout + r.stderr).strip())
    r = subprocess.run([ple or "ple", "score", "model.ple", "--input", "missing.csv"], capture_output=True, text=True)
    check("ple reports a missing input with exit code 1", r.returncode == 1 and "ple: error:" in r.stderr,
          r.stderr.strip())

    failed = sum(not ok for _, ok in checks)
    print(f"wheel end-to-end: {len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
