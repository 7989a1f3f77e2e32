"""Peak extra memory of exporting a torch-rechub PLE with one large embedding table.

    python python/tests/export_memory.py ROWS DIM DTYPE OUT.ple     # prints one JSON line

Builds the model (the table is ROWS x DIM float32, the rest tiny), then measures what
``ple_runtime.export`` adds on top of it: the resident set's growth (Linux: the peak RSS is
reset through /proc/self/clear_refs just before the export, so building the model does not
count) and tracemalloc's peak (numpy and Python allocations). Run by test_export_memory.py
in a subprocess at a size CI can afford, and by hand with a 1 GiB table (docs/EXPORT.md).
"""

from __future__ import annotations

import json
import os
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Make VmHWM (the peak RSS) the current RSS (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def build(rows: int, dim: int):
    import torch
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models.multi_task import PLE

    torch.manual_seed(0)
    feats = [SparseFeature("item", rows, dim), SparseFeature("user", 100, dim), DenseFeature("price")]
    model = PLE(feats, ["classification", "classification"], n_level=1, n_expert_specific=1, n_expert_shared=1,
                expert_params={"dims": [8]}, tower_params_list=[{"dims": [4]}, {"dims": [4]}])
    return model.eval()


def main() -> None:
    rows, dim, dtype, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    import ple_runtime

    model = build(rows, dim)
    table_bytes = model.embedding.embed_dict["item"].weight.numel() * 4
    rss_before = _status_kib("VmRSS")
    have_hwm = _reset_peak_rss() and rss_before is not None
    tracemalloc.start()
    t0 = time.perf_counter()
    ple_runtime.export(model, out, dtype=dtype)
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_peak = _status_kib("VmHWM") if have_hwm else None
    print(json.dumps({
        "rows": rows, "dim": dim, "dtype": dtype, "table_bytes": table_bytes,
        "file_size": os.path.getsize(out), "seconds": round(seconds, 2),
        "rss_peak_extra": None if rss_peak is None else (rss_peak - rss_before) * 1024,
        "traced_peak": traced_peak,
    }))


if __name__ == "__main__":
    main()
