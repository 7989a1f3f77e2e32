"""Makes docs/img/gates_trained.png, the gate heatmap of a trained model shown in docs/EXPORT.md.

A torch-rechub PLE (2 levels, 2 task experts per task and 2 shared experts) is trained for two
epochs on a synthetic CTR dataset whose two labels share some signal (user effects, a user-item
interaction) and differ in the rest, exported to .ple, and its gates are reported over 8,192
held-out samples with ple_runtime.gate_report. Run from the checkout root, in the environment of
tools/python_env.sh with matplotlib:

    python tools/gates_picture.py [OUT.png]
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import ple_runtime  # noqa: E402

L = 8


def ctr_data(n: int, rng):
    nu, ni = 1000, 2000
    user, item = rng.integers(0, nu, n), rng.integers(1, ni, n)
    hist = rng.integers(1, ni, (n, L))
    hist[np.arange(L)[None, :] >= rng.integers(0, L + 1, n)[:, None]] = 0
    dense = rng.normal(size=(n, 3)).astype(np.float32)
    ub, ib = rng.normal(0, 1, nu), rng.normal(0, 1, ni)
    inter = (rng.normal(0, 1, (nu, 4))[user] * rng.normal(0, 1, (ni, 4))[item]).sum(1) * 0.5
    logits = [ub[user] + ib[item] + dense @ np.array([0.8, -0.5, 0.3]) + inter - 1.0,
              0.7 * ub[user] - ib[item] + dense @ np.array([-0.2, 0.6, 0.1]) - 0.5 * inter - 1.5]
    labels = [(rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float32) for z in logits]
    x = {"user_id": user, "item_id": item, "hist": hist, **{f"d{i}": dense[:, i] for i in range(3)}}
    return x, labels, nu, ni


def main() -> int:
    from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature
    from torch_rechub.models.multi_task import PLE

    out = sys.argv[1] if len(sys.argv) > 1 else "docs/img/gates_trained.png"
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x, labels, nu, ni = ctr_data(40000, rng)
    feats = [SparseFeature("user_id", nu, 16), SparseFeature("item_id", ni, 16),
             SequenceFeature("hist", ni, 16, pooling="mean", shared_with="item_id", padding_idx=0)] + \
        [DenseFeature(f"d{i}") for i in range(3)]
    torch.manual_seed(0)
    model = PLE(feats, ["classification", "classification"], n_level=2, n_expert_specific=2, n_expert_shared=2,
                expert_params={"dims": [64, 32], "activation": "relu"},
                tower_params_list=[{"dims": [32]}, {"dims": [32]}])
    n_test = 8192
    train = np.arange(len(labels[0]) - n_test)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = torch.nn.BCELoss()
    model.train()
    for _ in range(2):
        for s in range(0, len(train), 512):
            idx = train[s:s + 512]
            p = model({k: torch.from_numpy(v[idx]) for k, v in x.items()})
            loss = sum(loss_fn(p[:, t], torch.from_numpy(labels[t][idx])) for t in range(2))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    test = {k: v[len(train):] for k, v in x.items()}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ple.ple")
        ple_runtime.export(model, path, task_names=["click", "purchase"], max_len={"hist": L})
        ple_runtime.verify(model, path, inputs=test, verbose=False)
        report = ple_runtime.gate_report(path, test)
    print(report)
    report.plot(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
