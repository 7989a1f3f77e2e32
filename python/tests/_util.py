"""Random hand-built specs covering every feature kind, activation and graph shape."""

from __future__ import annotations

import numpy as np


def layer(rng, out, inp, act="relu", bn=True, bias=True, **params):
    """One layer [out, in] with optional randomised eval BatchNorm."""
    lay = {"weight": rng.normal(0, 1 / np.sqrt(inp), (out, inp)), "activation": act,
           "bias": rng.normal(0, 0.3, out) if bias else None}
    if bn:
        lay["bn"] = {"gamma": rng.uniform(0.5, 1.5, out), "beta": rng.normal(0, 0.3, out),
                     "mean": rng.normal(0, 0.3, out), "var": rng.uniform(0.5, 2.0, out), "eps": 1e-5}
    lay.update(params)
    return lay


def full_spec(rng, bottom=False):
    """A 2-level PLE (S=2, SH=1, 2 tasks) using every activation and feature kind."""
    x0 = 4 + 4 + 4 + 4 + 1 + 3
    k = 6 if bottom else x0

    def expert(inp, act, params):
        return [layer(rng, 6, inp, act, **params), layer(rng, 5, 6, "relu")]

    def gate(inp, n):
        return [layer(rng, n, inp, "identity")]

    acts = [("relu", {}), ("prelu", {"prelu_weight": np.array([0.2])}),
            ("prelu", {"prelu_weight": rng.uniform(0, 0.5, 6)}), ("dice_rechub", {"dice_alpha": np.array([0.4])}),
            ("tanh", {}), ("leaky_relu", {"slope": 0.05}), ("sigmoid", {}),
            ("dice_bn", {"dice_alpha": rng.normal(size=6),
                         "dice_bn": {"mean": rng.normal(size=6), "var": rng.uniform(.5, 2, 6), "eps": 1e-8,
                                     "gamma": rng.uniform(.5, 1.5, 6), "beta": rng.normal(size=6)}})]
    it = iter(acts * 4)

    def lvl(inp, last):
        a = [next(it) for _ in range(5)]
        return {"task_experts": [[expert(inp, *a[0]), expert(inp, *a[1])], [expert(inp, *a[2]), expert(inp, *a[3])]],
                "shared_experts": [expert(inp, *a[4])],
                "task_gates": [gate(inp, 3), gate(inp, 3)],
                "shared_gate": None if last else gate(inp, 5)}

    spec = {
        "name": "full",
        "features": [
            {"name": "user", "kind": "sparse", "table": "users"},
            {"name": "item", "kind": "sparse", "table": "items", "id_f32": True},
            {"name": "hist_mean", "kind": "sequence", "table": "items", "max_len": 5, "pooling": "mean", "pad_id": 0},
            {"name": "hist_max", "kind": "sequence", "table": "items", "max_len": 3, "pooling": "max", "pad_id": 0},
            {"name": "age", "kind": "dense", "width": 1},
            {"name": "vec", "kind": "dense", "width": 3},
        ],
        "tables": {"users": rng.normal(size=(20, 4)), "items": rng.normal(size=(30, 4))},
        "x0_order": ["item", "user", "hist_mean", "hist_max", "vec", "age"],
        "bottom": [layer(rng, 6, x0, "relu")] if bottom else None,
        "levels": [lvl(k, False), lvl(5, True)],
        "towers": [
            {"mlp": [layer(rng, 4, 5, "relu"), layer(rng, 1, 4, "identity", bn=False)], "activation": "sigmoid"},
            {"mlp": [layer(rng, 3, 5, "softmax", bn=False)], "activation": "identity"},
        ],
        "outputs": [{"name": "ctr", "tower": 0}, {"name": "vec_out", "tower": 1}],
    }
    return spec


def inputs_for(spec, rng, batch=9):
    """Random valid inputs with padding and one all-padding row per sequence."""
    out = {}
    for f in spec["features"]:
        if f["kind"] == "dense":
            out[f["name"]] = rng.normal(size=(batch, f["width"])).astype(np.float32)
            continue
        vocab = spec["tables"][f["table"]].shape[0]
        if f["kind"] == "sparse":
            out[f["name"]] = rng.integers(0, vocab, batch).astype(np.int64)
        else:
            ids = rng.integers(1, vocab, (batch, f["max_len"])).astype(np.int64)
            pad = f.get("pad_id")
            if pad is not None:
                for b in range(batch):
                    ids[b, rng.integers(0, f["max_len"] + 1):] = pad
                ids[0] = pad
            out[f["name"]] = ids
    return out


def load_make_fixtures():
    """Import tools/make_fixtures.py (model builders, randomize, make_inputs) without
    leaving a tools/__pycache__ behind. Needs torch."""
    import importlib.util
    import os
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location("make_fixtures", os.path.join(repo, "tools", "make_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = saved
    return mod


def rel_err(a, b):
    """max |a - b| / max(1, |b|), elementwise (0 for empty arrays)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


TOL = 1e-5  # f32 parity: max |ours - library| / max(1, |library|)
F16_FACTOR = 3.0  # f16 parity: at most this many times the library model's own f16 error


def _score(path, x):
    import ple_runtime

    with ple_runtime.Model(path) as m:
        return m.predict(x, gates=True)


def check_f32(case, path, x, ref, ref_gates, results, lib):
    """The f32 file scored by libple against the library's outputs and gate weights (<= TOL);
    the errors are recorded in results[case]. lib names the library in messages."""
    out, gates = _score(path, x)
    assert out.shape == ref.shape and gates.shape == ref_gates.shape
    err, gerr = rel_err(out, ref), rel_err(gates, ref_gates)
    results.setdefault(case, {}).update(f32=err, f32_gates=gerr)
    assert err <= TOL, f"{case}: outputs differ from {lib} by {err:.3g} (relative)"
    assert gerr <= TOL, f"{case}: gate weights differ from {lib} by {gerr:.3g} (relative)"


def check_f16(case, paths, x, ref, library_f16_error, results, lib):
    """The f16 file scores like the f32 file of the same rounded weights (<= TOL), and its error
    against the library is at most F16_FACTOR x the error storing the library model's own
    weights in f16 causes: library_f16_error(rows) -> (nearest, stochastic), over the rows
    without an all-padding max-pooled sequence (activations ~1e9; ple_runtime.verify.f16_rows)."""
    import ple_runtime
    from ple_runtime.verify import f16_rows

    out16, gates16 = _score(paths["f16"], x)
    out16r, gates16r = _score(paths["f16r"], x)
    same = max(rel_err(out16, out16r), rel_err(gates16, gates16r))
    with ple_runtime.Model(paths["f16"]) as m:
        rows = f16_rows(m, x)
    ours = rel_err(out16[rows], ref[rows])
    nearest, stochastic = library_f16_error(rows)
    own = max(nearest, stochastic)
    results.setdefault(case, {}).update(f16_vs_f16r=same, f16_vs_torch=ours, torch_f16=nearest,
                                        torch_f16_sr=stochastic)
    assert same <= TOL, f"{case}: the f16 file and the f32 file of the same rounded weights differ by {same:.3g}"
    assert ours <= F16_FACTOR * own, (
        f"{case}: f16 error {ours:.3g} is over {F16_FACTOR:g}x the {lib} model's own f16 error "
        f"{own:.3g} (nearest {nearest:.3g}, stochastic {stochastic:.3g})")


# Parity results, filled by test_parity.py and printed / written by conftest.py at the end:
# {case id: {"f32": err, "f32_gates": err, "f16_vs_torch": err, "f16_vs_f16r": err, "torch_f16": err}}
PARITY: dict = {}
# The same for DeepCTR on Keras (test_keras.py); the "torch" keys hold the Keras model's errors.
KERAS_PARITY: dict = {}


CTR_HIST_LEN = 8


def ctr_data(n: int, rng):
    """A synthetic CTR dataset with a learnable signal: users, items, a history of items
    (CTR_HIST_LEN, padded with 0), 3 dense features; two labels drawn from logits with user and
    item effects, a user-item interaction and the dense features. Returns (x, labels, n_users,
    n_items)."""
    L = CTR_HIST_LEN
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


def train_two_tasks(model, x, labels, n_test: int, epochs: int = 2):
    """Trains a two-task torch-rechub model on all but the last `n_test` samples (Adam, BCE,
    batches of 512) and returns it in eval mode with the held-out (x, labels)."""
    import torch

    train = np.arange(len(labels[0]) - n_test)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = torch.nn.BCELoss()
    model.train()
    for _ in range(epochs):
        for s in range(0, len(train), 512):
            idx = train[s:s + 512]
            p = model({k: torch.from_numpy(v[idx]) for k, v in x.items()})
            loss = sum(loss_fn(p[:, t], torch.from_numpy(labels[t][idx])) for t in range(2))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    test = slice(len(train), None)
    return {k: v[test] for k, v in x.items()}, [y[test] for y in labels]
