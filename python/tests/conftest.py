"""Make the in-tree package (and the test helpers) importable without installing, and
summarise the parity results (test_parity.py: torch libraries; test_keras.py: DeepCTR on
Keras) at the end of the run."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

# (results dict name in _util, what was compared, report file)
REPORTS = [("PARITY", "torch-rechub / DeepCTR-Torch", "torch", os.path.join(HERE, "parity_report.txt")),
           ("KERAS_PARITY", "DeepCTR 0.9.4 on TensorFlow (tf-keras)", "keras",
            os.path.join(HERE, "parity_report_keras.txt"))]


def _summary(parity: dict, library: str = "torch-rechub / DeepCTR-Torch", lib: str = "torch") -> list[str]:
    cols = [("f32", "f32 out"), ("f32_gates", "f32 gates"), ("f16_vs_f16r", "f16 vs f16r"),
            ("f16_vs_torch", f"f16 vs {lib}"), ("torch_f16", f"{lib} f16 nearest"),
            ("torch_f16_sr", f"{lib} f16 stoch."), ("ratio", f"f16/{lib} nearest"), ("ratio_sr", f"f16/max({lib})")]
    rows = []
    for case, r in sorted(parity.items()):
        r = dict(r)
        if r.get("f16_vs_torch") is not None and r.get("torch_f16"):
            r["ratio"] = r["f16_vs_torch"] / r["torch_f16"]
            r["ratio_sr"] = r["f16_vs_torch"] / max(r["torch_f16"], r.get("torch_f16_sr") or 0.0)
        rows.append((case, r))
    lines = [f"parity with {library}, scored by libple (max |ours - {lib}| / max(1, |{lib}|))",
             f"{'case':<44s}" + "".join(f"{title:>19s}" for _, title in cols)]
    for case, r in rows:
        lines.append(f"{case:<44s}" + "".join(
            f"{r[k]:19.2e}" if r.get(k) is not None else f"{'-':>19s}" for k, _ in cols))
    worst = []
    for key, title in cols:
        vals = [(r[key], case) for case, r in rows if r.get(key) is not None]
        if vals:
            v, case = max(vals)
            worst.append(f"  worst {title:<17s} {v:.3e}  ({case})")
    lines += [f"{len(rows)} cases"] + worst
    return lines


def pytest_terminal_summary(terminalreporter):
    try:
        import _util
    except ImportError:
        return
    for attr, library, lib, report in REPORTS:
        parity = getattr(_util, attr, None)
        if not parity:
            continue
        lines = _summary(parity, library, lib)
        terminalreporter.section(f"parity summary: {library}")
        for line in lines[:2] + lines[-7:] if len(lines) > 60 else lines:
            terminalreporter.write_line(line)
        try:
            with open(report, "w") as fh:
                fh.write("\n".join(lines) + "\n")
            terminalreporter.write_line(f"full table: {report}")
        except OSError:
            pass
