"""``gate_report``: how each task's gates use the experts, the diagnosis PLE and MMoE users ask
for (expert utilisation, collapse, a task ignoring its own experts).

    report = ple_runtime.gate_report("model.ple", inputs)   # inputs: anything Model.predict takes
    print(report)                  # per level: each gate's mean weight per expert, spread, entropy
    report.warnings                # collapse, experts no gate uses, tasks ignoring their experts
    report.to_pandas()             # one row per (level, gate, expert)
    report.plot("gates.png")       # task × expert heatmap per level (matplotlib, optional)

Experts are labelled as the model defines them (docs/FORMAT.md §3.7): task ``t``'s gate mixes
its own S experts and the SH shared ones; the shared gate (every level but the last) mixes all
T·S task experts, task by task, then the shared ones. Tasks are named by the output their tower
makes.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from .codes import NONE
from .model import Model

__all__ = ["gate_report", "GateReport", "GateStats"]

# Thresholds of the warnings: small enough that a healthy model never trips them, large enough
# that a collapsed one does.
UNUSED_EXPERT = 0.01  # an expert whose mean weight is below this in every gate that can use it
IGNORED_OWN = 0.05  # a task gate giving its own experts less than this in total
COLLAPSED_ENTROPY = 0.05  # a gate whose mean normalised entropy is below this picks one expert


@dataclasses.dataclass
class GateStats:
    """One gate over a batch: per expert, the mean and standard deviation of its weight; the
    mean entropy of the gate's distribution (nats) and that divided by log(n_experts)."""

    level: int
    gate: str  # "task <name>" or "shared"
    experts: list[str]  # "task <name> expert j" / "shared j"
    mean: np.ndarray
    std: np.ndarray
    entropy: float
    normalized_entropy: float


@dataclasses.dataclass
class GateReport:
    model: str
    samples: int
    tasks: list[str]
    gates: list[GateStats]
    warnings: list[str]

    def levels(self) -> list[int]:
        return sorted({g.level for g in self.gates})

    def __str__(self) -> str:
        lines = [f"gate report of {self.model!r} over {self.samples} samples (mean weight ± std per expert)"]
        for level in self.levels():
            lines.append(f"level {level}")
            for g in (g for g in self.gates if g.level == level):
                lines.append(f"  {g.gate} gate: entropy {g.entropy:.3f} nats ({g.normalized_entropy:.0%} of uniform)")
                for name, m, s in zip(g.experts, g.mean, g.std):
                    bar = "#" * int(round(m * 20))
                    lines.append(f"    {name:<28} {m:6.3f} ± {s:5.3f}  {bar}")
        if self.warnings:
            lines.append("warnings:")
            lines += [f"  - {w}" for w in self.warnings]
        else:
            lines.append("no warnings: every expert is used and no gate has collapsed")
        return "\n".join(lines)

    def to_pandas(self):
        """One row per (level, gate, expert): mean, std, and the gate's entropies."""
        import pandas as pd

        rows = [{"level": g.level, "gate": g.gate, "expert": e, "mean": float(m), "std": float(s),
                 "gate_entropy": g.entropy, "gate_normalized_entropy": g.normalized_entropy}
                for g in self.gates for e, m, s in zip(g.experts, g.mean, g.std)]
        return pd.DataFrame(rows)

    def plot(self, path: str | os.PathLike | None = None):
        """A heatmap per level: gates (rows) × experts (columns), the mean weight in each cell.
        Needs matplotlib (``pip install matplotlib``). Saves to ``path`` if given; returns the
        figure."""
        try:
            import matplotlib
            if path is not None:
                matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("GateReport.plot needs matplotlib: pip install matplotlib") from exc
        levels = self.levels()
        widths = [len({e for g in self.gates if g.level == lv for e in g.experts}) for lv in levels]
        fig, axes = plt.subplots(1, len(levels), figsize=(sum(1.0 + 0.8 * w for w in widths) + 1.5, 3.2),
                                 squeeze=False, gridspec_kw={"width_ratios": widths})
        for ax, level in zip(axes[0], levels):
            gates = [g for g in self.gates if g.level == level]
            # Columns: every expert of the level, in the shared gate's order (task-major, then shared).
            seen = list(dict.fromkeys(e for g in gates for e in g.experts))
            cols = [e for e in seen if not e.startswith("shared ")] + [e for e in seen if e.startswith("shared ")]
            grid = np.full((len(gates), len(cols)), np.nan)
            for r, g in enumerate(gates):
                for e, m in zip(g.experts, g.mean):
                    grid[r, cols.index(e)] = m
            im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
            # "task ctr expert 0" -> "ctr\n#0", "shared 1" -> "shared\n#1"
            short = [c.removeprefix("task ").replace(" expert ", "\n#").replace("shared ", "shared\n#") for c in cols]
            ax.set_xticks(range(len(cols)), short, fontsize=7)
            ax.set_yticks(range(len(gates)), [g.gate for g in gates], fontsize=8)
            ax.set_title(f"level {level}", fontsize=9)
            for r in range(grid.shape[0]):
                for c in range(grid.shape[1]):
                    if not np.isnan(grid[r, c]):
                        ax.text(c, r, f"{grid[r, c]:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if grid[r, c] < 0.5 else "black")
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="mean gate weight")
        fig.suptitle(f"{self.model}: gate weights over {self.samples} samples", fontsize=10)
        if path is not None:
            fig.savefig(path, dpi=120, bbox_inches="tight")
        return fig


def _task_names(pf) -> list[str]:
    names = [f"task{t}" for t in range(pf.n_tasks)]
    for o in reversed(pf.outputs):  # the first output a tower makes names its task
        if o.kind == 0 and o.a < pf.n_tasks:
            names[o.a] = o.name
    return names


def gate_report(model: Model | str | os.PathLike, inputs: Any, **predict_options) -> GateReport:
    """Gate statistics of ``model`` (a :class:`Model` or a path) over ``inputs`` (anything
    :meth:`Model.predict` takes; use real traffic, not random ids, for a meaningful picture)."""
    from .reader import read_header_and_meta

    own = not isinstance(model, Model)
    m = Model(model) if own else model
    try:
        if m.path is None:
            raise ValueError("gate_report needs a model opened from a file (it reads the level structure)")
        pf = read_header_and_meta(m.path, verify_data=False)
        if not pf.levels:
            raise ValueError(f"{m.name!r} has no expert levels, so no gates (shared-bottom or ESMM)")
        _, weights = m.predict(inputs, gates=True, **predict_options)
    finally:
        if own:
            m.close()
    tasks = _task_names(pf)
    stats: list[GateStats] = []
    warnings: list[str] = []
    col = 0
    for li, level in enumerate(pf.levels):
        S, SH = level.n_task_experts, level.n_shared
        task_experts = [[f"task {tasks[t]} expert {j}" for j in range(S)] for t in range(pf.n_tasks)]
        shared = [f"shared {j}" for j in range(SH)]
        gates = [(f"task {tasks[t]}", task_experts[t] + shared) for t in range(pf.n_tasks)]
        if level.shared_gate != NONE:
            gates.append(("shared", [e for t in task_experts for e in t] + shared))
        use: dict[str, float] = {}
        for name, experts in gates:
            w = weights[:, col:col + len(experts)].astype(np.float64)
            col += len(experts)
            ent = -np.sum(np.where(w > 0, w * np.log(np.clip(w, 1e-30, None)), 0.0), axis=1)
            h = float(ent.mean()) if len(w) else float("nan")
            norm = h / math.log(len(experts)) if len(experts) > 1 else 1.0
            g = GateStats(li, name, experts, w.mean(axis=0) if len(w) else np.zeros(len(experts)),
                          w.std(axis=0) if len(w) else np.zeros(len(experts)), h, norm)
            stats.append(g)
            for e, mval in zip(experts, g.mean):
                use[e] = max(use.get(e, 0.0), float(mval))
            if len(experts) > 1 and norm < COLLAPSED_ENTROPY:
                top = experts[int(np.argmax(g.mean))]
                warnings.append(f"level {li}: the {name} gate has collapsed onto {top!r} (entropy {norm:.1%} of "
                                "uniform): the other experts it can use contribute almost nothing")
            if name.startswith("task ") and S > 0 and SH > 0:
                own_share = float(g.mean[:S].sum())
                if own_share < IGNORED_OWN:
                    warnings.append(f"level {li}: {name} ignores its own experts (they get {own_share:.1%} of its "
                                    "gate): it relies on the shared experts alone")
        for e, best in use.items():
            if best < UNUSED_EXPERT:
                warnings.append(f"level {li}: expert {e!r} is unused (mean weight below {UNUSED_EXPERT:.0%} in every "
                                "gate that can use it)")
    return GateReport(m.name, int(weights.shape[0]), tasks, stats, warnings)
