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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "python"), os.path.join(HERE, "..", "python", "tests")]
import ple_runtime  # noqa: E402
from _util import CTR_HIST_LEN as L, ctr_data, train_two_tasks  # noqa: E402  (the int8 tests' dataset)


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
    test, _ = train_two_tasks(model, x, labels, n_test=8192)
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
