"""``ple_runtime.verify``: score the same inputs with the training model and its ``.ple`` file.

    report = ple_runtime.verify(model, "model.ple")            # random valid inputs, batch 1024
    report = ple_runtime.verify(model, "model.ple", inputs)    # your own inputs

It runs the model -- a torch one (torch-rechub / DeepCTR-Torch, in eval mode; its training
mode is restored afterwards) or a DeepCTR Keras one (``model.predict``; see
:mod:`ple_runtime.export_keras`) -- and the file (through libple, :class:`ple_runtime.Model`),
prints per output the max absolute error and the max relative error
``max |ours - model| / max(1, |model|)`` (and the same for the gate weights), and raises
:class:`VerifyError` if the relative error is above the tolerance. A Keras model needs no torch.

Tolerance: 1e-5 for an f32 file. For an f16 file it is 3x the error that storing the
model's own parameters in f16 causes on the same inputs (never below 1e-5),
measured on copies of the model (Keras: in place, then restored): the larger of the
round-to-nearest error and the mean error of 4 stochastic roundings (one rounding of a
small model is one draw of a random quantity, and can be several times smaller than
typical); reported as ``torch_f16_error`` (and ``torch_f16_nearest`` /
``torch_f16_stochastic``; the names are kept for Keras models too).

int8 files (``export(..., dtype="int8")``) are not exact, so they are judged by accuracy, per
output: max and mean |ours - model|, the Spearman rank correlation of the two score columns and,
when ``labels`` are given, the AUC and log loss of both. Defaults (``INT8_MEAN_REL``,
``INT8_MIN_SPEARMAN``): mean ``|ours - model| / max(1, |model|)`` <= 2e-3, and rank correlation
>= 0.999 or, for a torch model, >= the rank correlation that f16 parameters give the model itself
minus 0.005 (on random-weight models near-tied scores reorder under any rounding; the
``f16_spearman`` column shows it), and AUC within 0.001 of the model's when labels are given.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from typing import Any, TextIO

import numpy as np

from .model import Model

__all__ = ["verify", "random_inputs", "rel_err", "VerifyError", "VerifyReport", "load_inputs", "f16_rows",
           "torch_f16_error", "round_params_to_f16", "round_to_f16", "Accuracy", "rank_correlation", "auc",
           "logloss", "int8_accuracy", "has_int8_layers"]

F32_TOLERANCE = 1e-5
F16_FACTOR = 3.0
INT8_MEAN_REL = 2e-3
INT8_MIN_SPEARMAN = 0.999
INT8_SPEARMAN_SLACK = 0.005
INT8_AUC_DELTA = 1e-3


class VerifyError(AssertionError):
    """The file's scores differ from the model's by more than the tolerance
    (``.report`` holds the :class:`VerifyReport`)."""

    def __init__(self, message: str, report: "VerifyReport"):
        super().__init__(message)
        self.report = report


@dataclasses.dataclass
class OutputError:
    name: str
    max_abs: float
    max_rel: float


@dataclasses.dataclass
class Accuracy:
    """How close a quantized file's scores are to the model's, for one output."""

    name: str
    max_abs: float
    mean_abs: float
    mean_rel: float  # mean |ours - model| / max(1, |model|)
    spearman: float  # rank correlation of ours with the model's scores
    f16_spearman: float | None = None  # the model with f16 parameters against itself (torch)
    auc_model: float | None = None  # with labels
    auc_ours: float | None = None
    logloss_model: float | None = None
    logloss_ours: float | None = None

    def problems(self) -> list[str]:
        out = []
        if not self.mean_rel <= INT8_MEAN_REL:
            out.append(f"{self.name}: mean relative |delta| {self.mean_rel:.3e} > {INT8_MEAN_REL:g}")
        floor = INT8_MIN_SPEARMAN if self.f16_spearman is None else \
            min(INT8_MIN_SPEARMAN, self.f16_spearman - INT8_SPEARMAN_SLACK)
        if not self.spearman >= floor:
            out.append(f"{self.name}: rank correlation {self.spearman:.5f} < {floor:.5f}")
        if self.auc_model is not None and not abs(self.auc_ours - self.auc_model) <= INT8_AUC_DELTA:
            out.append(f"{self.name}: AUC {self.auc_ours:.5f} vs the model's {self.auc_model:.5f}")
        return out


@dataclasses.dataclass
class VerifyReport:
    path: str
    dtype: str
    batch: int
    outputs: list  # [OutputError]
    gates: OutputError | None
    tolerance: float
    torch_f16_error: float | None  # error of the torch model with f16-rounded parameters (f16 files)
    torch_f16_nearest: float | None = None  # ... rounded to nearest
    torch_f16_stochastic: float | None = None  # ... mean of stochastic roundings
    skipped_rows: int = 0  # f16 only: rows with an all-padding max-pooled sequence (f16_rows)
    ok: bool = True
    framework: str = "torch"  # "torch" or "keras": whose model the file was compared with
    accuracy: list | None = None  # [Accuracy] per output, for files with int8 layers

    @property
    def worst(self) -> float:
        """The largest relative error over outputs and gates."""
        errs = [o.max_rel for o in self.outputs] + ([self.gates.max_rel] if self.gates else [])
        return max(errs) if errs else 0.0

    def __str__(self) -> str:
        lines = [f"verify {self.path} ({self.dtype}, batch {self.batch}):",
                 f"  {'output':<24s} {'max abs err':>12s} {'max rel err':>12s}"]
        for o in self.outputs + ([self.gates] if self.gates else []):
            lines.append(f"  {o.name:<24s} {o.max_abs:12.3e} {o.max_rel:12.3e}")
        if self.torch_f16_error is not None:
            lines.append(f"  {self.framework} with f16 parameters: max rel err {self.torch_f16_nearest:.3e} rounded "
                         f"to nearest, {self.torch_f16_stochastic:.3e} stochastic rounding (mean of 4); tolerance = "
                         f"{F16_FACTOR:g} x the larger, at least {F32_TOLERANCE:g}")
        if self.skipped_rows:
            lines.append(f"  ({self.skipped_rows} rows with an all-padding max-pooled sequence left out: "
                         "activations of order 1e9, ill-conditioned under any f16 rounding)")
        verdict = "OK" if self.ok else "FAILED"
        if self.accuracy is not None:
            lines.append(f"  int8 accuracy against the {self.framework} model:")
            lines.append(f"  {'output':<24s} {'max |d|':>10s} {'mean |d|':>10s} {'spearman':>9s} {'f16 spear':>9s} "
                         f"{'AUC model':>9s} {'AUC ours':>9s} {'LL model':>9s} {'LL ours':>9s}")

            def f(v, fmt):
                return format(v, fmt) if v is not None else "-"
            for a in self.accuracy:
                lines.append(f"  {a.name:<24s} {a.max_abs:10.3e} {a.mean_abs:10.3e} {a.spearman:9.5f} "
                             f"{f(a.f16_spearman, '9.5f'):>9s} {f(a.auc_model, '9.5f'):>9s} {f(a.auc_ours, '9.5f'):>9s} "
                             f"{f(a.logloss_model, '9.5f'):>9s} {f(a.logloss_ours, '9.5f'):>9s}")
            problems = [p for a in self.accuracy for p in a.problems()]
            lines.append(f"  {verdict}" + (": " + "; ".join(problems) if problems else
                                          f": mean rel |d| <= {INT8_MEAN_REL:g}, rank correlation and AUC "
                                          "within their bounds"))
            return "\n".join(lines)
        lines.append(f"  {verdict}: worst {self.worst:.3e} {'<=' if self.ok else '>'} tolerance {self.tolerance:.3e}")
        return "\n".join(lines)


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max(1, |ref|) over all elements (0 for empty arrays; inf if the
    NaN pattern differs)."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours.size == 0:
        return 0.0
    if not np.array_equal(np.isnan(ours), np.isnan(ref)):
        return float("inf")
    ok = ~np.isnan(ref)
    return float(np.max(np.abs(ours[ok] - ref[ok]) / np.maximum(1.0, np.abs(ref[ok])), initial=0.0))


def _abs_err(ours: np.ndarray, ref: np.ndarray) -> float:
    d = np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64))
    return float(np.nanmax(d)) if d.size and not np.all(np.isnan(d)) else 0.0


def random_inputs(model: Model, batch: int = 1024, seed: int = 0) -> dict:
    """Random valid inputs for a model, from its input definitions: ids uniform in the
    table (sequences padded to a random length with the padding id, some rows all
    padding), dense values standard normal."""
    rng = np.random.default_rng(seed)
    out = {}
    for inp in model.inputs:
        if inp.kind == "dense":
            out[inp.name] = rng.normal(0.0, 1.0, (batch, inp.width)).astype(np.float32)
            continue
        shape = (batch,) if inp.kind == "sparse" else (batch, inp.max_len)
        ids = rng.integers(0, inp.vocab_size, shape, dtype=np.int64)
        if inp.vocab_size > (1 << 24):
            # ids of DeepCTR models go through f32: keep those that still fit once rounded
            ids = np.where(ids.astype(np.float32).astype(np.float64) < inp.vocab_size, ids, 0)
        if inp.kind == "sequence" and inp.pad_id is not None:
            lengths = rng.integers(0, inp.max_len + 1, batch)
            ids[np.arange(inp.max_len)[None, :] >= lengths[:, None]] = inp.pad_id
            if batch > 1:
                ids[1] = inp.pad_id  # one all-padding row
        out[inp.name] = ids
    return out


def load_inputs(directory: str | os.PathLike, model: Model) -> dict:
    """``DIR/in_<feature>.npy`` for every input of the model (the layout of the Rust CLI's
    ``--input DIR`` and of tests/fixtures)."""
    out = {}
    for name in model.input_names:
        path = os.path.join(directory, f"in_{name}.npy")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing (every input needs an in_<name>.npy file)")
        out[name] = np.load(path, allow_pickle=False)
    return out


def round_to_f16(values: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """float64 values rounded to f16 values: to nearest (rng None), or stochastically: each
    value goes to one of its two neighbouring f16 values with probability proportional to
    closeness (another, equally legitimate, set of f16 values)."""
    v = np.asarray(values, dtype=np.float64)
    near = v.astype(np.float16)
    if rng is None:
        return near.astype(np.float64)
    other = np.nextafter(near, np.where(near < v, np.float16(np.inf), np.float16(-np.inf)))
    gap = np.abs(other.astype(np.float64) - near.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = np.where((near == v) | ~np.isfinite(gap) | (gap == 0), 0.0, np.abs(v - near) / gap)
    return np.where(rng.random(v.shape) < prob, other, near).astype(np.float64)


def round_params_to_f16(torch_model: Any, seed: int | None = None) -> Any:
    """A deep copy of a torch model with every floating-point parameter rounded to f16
    (and kept in f32); BatchNorm running statistics are buffers, not parameters: kept.

    seed None: round to nearest. Otherwise stochastic rounding (seeded): each value goes
    to one of its two neighbouring f16 values with probability proportional to closeness,
    which gives another, equally legitimate, set of f16 parameters."""
    import torch

    clone = copy.deepcopy(torch_model)
    rng = None if seed is None else np.random.default_rng(seed)
    with torch.no_grad():
        for p in clone.parameters():
            if not p.is_floating_point():
                continue
            if rng is None:
                p.copy_(p.to(torch.float16).to(p.dtype))
                continue
            pick = round_to_f16(p.detach().cpu().to(torch.float64).numpy(), rng)
            p.copy_(torch.from_numpy(pick).to(p.dtype))
    return clone


def f16_rows(model: Model, inputs: dict) -> np.ndarray:
    """Rows on which an f16 comparison is meaningful: all but those where a max-pooled
    sequence is all padding. DeepCTR pools such a row to about -1e9 (E - 1e9), so its
    activations are of order 1e9 and near-cancelling sums of them decide saturated
    sigmoids and one-hot gates: any perturbation of the weights (f16 storage in torch
    as much as in the file) can flip them. f32 parity holds on those rows too."""
    batch = len(next(iter(inputs.values()))) if inputs else 0
    ok = np.ones(batch, dtype=bool)
    for inp in model.inputs:
        if inp.kind == "sequence" and inp.pooling == "max" and inp.pad_id is not None and inp.name in inputs:
            ids = np.asarray(inputs[inp.name]).reshape(batch, -1)
            ok &= ~np.all(ids == inp.pad_id, axis=1)
    return ok


def torch_f16_error(torch_model: Any, inputs: dict, ref: np.ndarray, ref_gates: np.ndarray | None = None,
                    draws: int = 4, rows: np.ndarray | None = None) -> tuple[float, float]:
    """The error that storing the torch model's own parameters in f16 causes on `inputs`:
    (round-to-nearest error, mean error over `draws` stochastic roundings). Outputs and,
    if given, gate weights; max |rounded - ref| / max(1, |ref|), over `rows` (a boolean
    mask, default all; see :func:`f16_rows`)."""
    from . import export_torch

    sel = slice(None) if rows is None else rows

    def err(model):
        e = rel_err(export_torch.run_model(model, inputs)[sel], ref[sel])
        if ref_gates is not None:
            e = max(e, rel_err(export_torch.run_gates(model, inputs)[sel], ref_gates[sel]))
        return e

    nearest = err(round_params_to_f16(torch_model))
    stochastic = float(np.mean([err(round_params_to_f16(torch_model, seed)) for seed in range(draws)])) if draws else 0.0
    return nearest, stochastic


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (ties share their average rank)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, ties given their average rank."""
    _, inverse, counts = np.unique(np.asarray(x, np.float64), return_inverse=True, return_counts=True)
    start = np.cumsum(counts) - counts
    return (start + (counts + 1) / 2.0)[inverse]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    y = np.asarray(labels).reshape(-1) > 0.5
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    r = _ranks(scores)
    return float((r[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def logloss(p: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities p (clipped to [eps, 1 - eps])."""
    p = np.clip(np.asarray(p, np.float64).reshape(-1), eps, 1 - eps)
    y = np.asarray(labels, np.float64).reshape(-1)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def has_int8_layers(path: str | os.PathLike) -> bool:
    """Whether the file stores any dense layer in int8 (reads the header and metadata only)."""
    from .codes import DTYPE_I8
    from .reader import read_header_and_meta

    return any(t.dtype == DTYPE_I8 for t in read_header_and_meta(path, verify_data=False).tensors)


def int8_accuracy(m: Model, ours: np.ndarray, ref: np.ndarray, f16_ref: np.ndarray | None,
                  labels: dict | None) -> list:
    """Per output: the :class:`Accuracy` of `ours` against `ref` (`f16_ref`: the model with f16
    parameters, for the rank-correlation baseline; `labels`: {output name: 0/1 array})."""
    out = []
    for o in m.outputs:
        cols = slice(o.offset, o.offset + o.len)
        a, r = ours[:, cols].astype(np.float64), ref[:, cols].astype(np.float64)
        d = np.abs(a - r)
        acc = Accuracy(o.name, float(d.max(initial=0.0)), float(d.mean()) if d.size else 0.0,
                       float((d / np.maximum(1.0, np.abs(r))).mean()) if d.size else 0.0,
                       rank_correlation(a.reshape(-1), r.reshape(-1)))
        if f16_ref is not None:
            acc.f16_spearman = rank_correlation(f16_ref[:, cols].reshape(-1), r.reshape(-1))
        if labels is not None and o.name in labels:
            y = np.asarray(labels[o.name]).reshape(-1)
            acc.auc_model, acc.auc_ours = auc(r, y), auc(a, y)
            acc.logloss_model, acc.logloss_ours = logloss(r, y), logloss(a, y)
        out.append(acc)
    return out


def _framework(model: Any):
    """(name, exporter module) for a model: Keras models go to export_keras (no torch import)."""
    from . import export_keras

    if export_keras.is_keras_model(model):
        return "keras", export_keras
    from . import export_torch

    return "torch", export_torch


def verify(model: Any, path: str | os.PathLike, inputs: dict | None = None, batch: int = 1024, *,
           tolerance: float | None = None, seed: int = 0, gates: bool = True, verbose: bool = True,
           file: TextIO | None = None, raise_on_failure: bool = True, labels: dict | None = None) -> VerifyReport:
    """Compare a torch-rechub / DeepCTR-Torch / DeepCTR (Keras) model with its exported ``.ple`` file.

    inputs: ``{feature name: array}`` as the model takes them (default: ``batch`` random
    valid inputs drawn from the file's feature definitions, seeded by ``seed``).
    tolerance: max relative error allowed (default: 1e-5 for f32 files, 3x the
    model's own f16-rounding error for f16 files). gates: also compare gate weights.
    Prints the report (unless ``verbose=False``), raises :class:`VerifyError` above the
    tolerance (unless ``raise_on_failure=False``), and returns the :class:`VerifyReport`.
    A file with int8 layers is judged by accuracy instead (module docstring; ``labels``:
    ``{output name: 0/1 array}`` adds AUC and log loss).
    """
    if has_int8_layers(path):
        return _verify_int8(model, path, inputs, batch, seed, verbose, file, raise_on_failure, labels)
    framework, exporter = _framework(model)
    if framework == "torch":
        model = exporter.unwrap(model)

    with Model(path) as m:
        if inputs is None:
            inputs = random_inputs(m, batch, seed)
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        # ple first: it checks every name, length and id with its own messages (an out-of-range
        # id would otherwise surface as the training library's IndexError).
        ours, our_gates = m.predict(inputs, gates=True)
        was_training = bool(getattr(model, "training", False))
        try:
            ref = exporter.run_model(model, inputs)
            ref_gates = exporter.run_gates(model, inputs) if gates and m.gate_width else None
            f16_err = f16_parts = None
            rows = np.ones(len(ref), dtype=bool)
            if m.dtype != "f32":
                rows = f16_rows(m, inputs)
                f16_model_error = exporter.f16_error if framework == "keras" else torch_f16_error
                f16_parts = f16_model_error(model, inputs, ref, ref_gates, rows=rows)
                f16_err = max(f16_parts)
        finally:
            if framework == "torch":
                model.train(was_training)
        n = ours.shape[0]
        if ref.shape != ours.shape:
            raise VerifyError(f"{path}: the {framework} model returns shape {ref.shape}, the file {ours.shape} "
                              f"(outputs {m.output_names})", None)
        outs = [OutputError(o.name, _abs_err(ours[rows, o.offset:o.offset + o.len], ref[rows, o.offset:o.offset + o.len]),
                            rel_err(ours[rows, o.offset:o.offset + o.len], ref[rows, o.offset:o.offset + o.len]))
                for o in m.outputs]
        gate_err = None
        if ref_gates is not None and ref_gates.shape != our_gates.shape:
            raise VerifyError(f"{path}: the {framework} model has gate weights of shape {ref_gates.shape}, the file "
                              f"{our_gates.shape} (gates {m.gate_names})", None)
        if ref_gates is not None:
            gate_err = OutputError("gate weights", _abs_err(our_gates[rows], ref_gates[rows]),
                                   rel_err(our_gates[rows], ref_gates[rows]))
        if tolerance is None:
            tolerance = F32_TOLERANCE if f16_err is None else max(F32_TOLERANCE, F16_FACTOR * f16_err)
        report = VerifyReport(os.fspath(path), m.dtype, n, outs, gate_err, float(tolerance), f16_err,
                              *(f16_parts or (None, None)), skipped_rows=int(n - rows.sum()), framework=framework)
        report.ok = report.worst <= tolerance
    if verbose:
        print(report, file=file or sys.stdout)
    if not report.ok and raise_on_failure:
        raise VerifyError(f"{path}: max relative error {report.worst:.3e} is above the tolerance "
                          f"{report.tolerance:.3e}\n{report}", report)
    return report


def _verify_int8(model: Any, path, inputs, batch: int, seed: int, verbose: bool, file, raise_on_failure: bool,
                 labels: dict | None) -> VerifyReport:
    framework, exporter = _framework(model)
    if framework == "torch":
        model = exporter.unwrap(model)
    with Model(path) as m:
        if inputs is None:
            inputs = random_inputs(m, batch, seed)
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        ours = m.predict(inputs)
        was_training = bool(getattr(model, "training", False))
        try:
            ref = exporter.run_model(model, inputs)
            f16_ref = exporter.run_model(round_params_to_f16(model), inputs) if framework == "torch" else None
        finally:
            if framework == "torch":
                model.train(was_training)
        if ref.shape != ours.shape:
            raise VerifyError(f"{path}: the {framework} model returns shape {ref.shape}, the file {ours.shape} "
                              f"(outputs {m.output_names})", None)
        accuracy = int8_accuracy(m, ours, ref, f16_ref, labels)
        outs = [OutputError(a.name, a.max_abs, rel_err(ours[:, o.offset:o.offset + o.len], ref[:, o.offset:o.offset + o.len]))
                for a, o in zip(accuracy, m.outputs)]
        report = VerifyReport(os.fspath(path), m.dtype, ours.shape[0], outs, None, INT8_MEAN_REL, None,
                              framework=framework, accuracy=accuracy)
        problems = [p for a in accuracy for p in a.problems()]
        report.ok = not problems
    if verbose:
        print(report, file=file or sys.stdout)
    if not report.ok and raise_on_failure:
        raise VerifyError(f"{path}: int8 accuracy out of bounds: {'; '.join(problems)}\n{report}", report)
    return report
