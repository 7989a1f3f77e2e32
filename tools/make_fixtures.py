#!/usr/bin/env python3
"""Build the golden fixtures (tests/fixtures/) and the quickstart example (examples/models/).

Every fixture is a REAL torch-rechub 0.9.0 or DeepCTR-Torch 0.3.0 model with every
parameter and BatchNorm statistic randomised from a fixed seed, scored in eval mode
on a batch of 37 random inputs (with padding and all-padding sequences). For each
one this script writes:

  model.ple          f32 weights (docs/FORMAT.md)
  model_f16.ple      f16 dense weights and tables
  model_f16r.ple     f32 storage of the f16-rounded weights (same numbers as model_f16.ple)
  in_<feature>.npy   int64 ids [B] / [B, max_len], or float32 [B, width]
  expected_torch.npy float32 [B, output_width]: the library model's own output
  expected_ref.npy   float64: ple_runtime.reference on the exported spec
  gates_ref.npy      float64 [B, gate_width]: the reference's gate weights

and refuses to finish unless, for every fixture,
  * max|ref - torch| / max(1, |torch|) <= 1e-5 (the reference follows the library),
  * the library's own gate weights match gates_ref to 1e-5,
  * scoring model.ple with ple_runtime.numpy_runtime matches the reference to 1e-5
    (the writer's folding and packing are right), and model_f16.ple and
    model_f16r.ple score identically (f16 storage is the only rounding).

Usage (needs torch, torch-rechub and deepctr-torch; see tools/python_env.sh):
    bash tools/python_env.sh /tmp/pyenv && /tmp/pyenv/bin/python tools/make_fixtures.py
Options: --out DIR (default tests/fixtures), --examples DIR (default examples/models),
--only NAME[,NAME] to rebuild some fixtures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import zlib

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ple_runtime import export_torch, format as fmt, numpy_runtime, reference  # noqa: E402
from ple_runtime.spec import normalize  # noqa: E402

BATCH = 37
TOL = 1e-5


def import_deepctr():
    """Import DeepCTR-Torch without its import-time PyPI version check (no network)."""
    export_torch.import_deepctr_offline()
    from deepctr_torch import inputs, models
    from deepctr_torch.layers import activation

    return inputs, models.multitask, activation


# --------------------------------------------------------------------------- randomisation


def randomize(model: nn.Module, rng: np.random.Generator) -> None:
    """Give every parameter and BatchNorm statistic a seeded random value.

    Scales keep pre-activations O(1) so sigmoids and softmaxes are not saturated.
    Fails if any float parameter or buffer is left untouched.
    """
    touched: set[int] = set()

    def put(t: torch.Tensor, values: np.ndarray) -> None:
        with torch.no_grad():
            t.copy_(torch.from_numpy(np.asarray(values, dtype=np.float32).reshape(t.shape)))
        touched.add(id(t))

    for mod in model.modules():
        name = type(mod).__name__
        if type(mod) is nn.Linear:
            put(mod.weight, rng.normal(0, 1.2 / np.sqrt(mod.in_features), mod.weight.shape))
            if mod.bias is not None:
                put(mod.bias, rng.normal(0, 0.3, mod.bias.shape))
        elif type(mod) is nn.BatchNorm1d:
            n = mod.num_features
            if mod.affine:
                put(mod.weight, rng.uniform(0.6, 1.4, n))
                put(mod.bias, rng.normal(0, 0.3, n))
            put(mod.running_mean, rng.normal(0, 0.3, n))
            put(mod.running_var, rng.uniform(0.4, 2.0, n))
        elif type(mod) is nn.PReLU:
            put(mod.weight, rng.uniform(-0.3, 0.6, mod.weight.shape))
        elif type(mod) is nn.Embedding:
            put(mod.weight, rng.normal(0, 0.6, mod.weight.shape))
        elif name == "Dice" and type(mod).__module__ == "torch_rechub.basic.activation":
            put(mod.alpha, rng.normal(0, 0.7, 1))
        elif name == "Dice" and type(mod).__module__ == "deepctr_torch.layers.activation":
            put(mod.alpha, rng.uniform(-0.8, 0.8, mod.alpha.shape))
        elif name == "PredictionLayer" and getattr(mod, "use_bias", False):
            put(mod.bias, rng.normal(0, 0.4, 1))
    for pname, p in list(model.named_parameters()) + list(model.named_buffers()):
        if p.is_floating_point() and id(p) not in touched:
            raise RuntimeError(f"randomize: {pname} was not randomised")
    model.eval()


# --------------------------------------------------------------------------- inputs


def make_inputs(spec: dict, rng: np.random.Generator, batch: int = BATCH) -> dict:
    """Random valid inputs for a canonical spec.

    Sequences get a random number of real ids then padding (plus a few padding ids in
    the middle), and rows 0 and 5 are all padding; with no pad id every position counts.
    """
    out = {}
    for f in spec["features"]:
        name = f["name"]
        if f["kind"] == "dense":
            out[name] = rng.normal(0, 1, (batch, f["width"])).astype(np.float32)
            continue
        vocab = spec["tables"][f["table"]].shape[0]
        if f["kind"] == "sparse":
            out[name] = rng.integers(0, vocab, batch).astype(np.int64)
            continue
        L, pad = f["max_len"], f["pad_id"]
        if pad is None:
            out[name] = rng.integers(0, vocab, (batch, L)).astype(np.int64)
            continue
        real = np.array([i for i in range(vocab) if i != pad])
        ids = rng.choice(real, (batch, L)).astype(np.int64)
        for b in range(batch):
            ids[b, rng.integers(1, L + 1):] = pad
            if rng.random() < 0.2:
                ids[b, rng.integers(0, L)] = pad
        ids[[0, 5]] = pad
        out[name] = ids
    return out


# --------------------------------------------------------------------------- models


def rechub_imports():
    from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature
    from torch_rechub.basic.layers import MLP
    from torch_rechub.models.multi_task import ESMM, MMOE, PLE, SharedBottom

    return DenseFeature, SequenceFeature, SparseFeature, MLP, PLE, MMOE, SharedBottom, ESMM


def build_rechub_ple2():
    """2 levels, S=2, SH=1, PReLU; shared tables (shared_with), masked mean and unmasked
    sum sequences, scalar and vector dense features listed first (they land last in x0)."""
    Dense, Seq, Sparse, MLP, PLE, *_ = rechub_imports()
    feats = [Dense("age"), Dense("ctx", embed_dim=2),
             Sparse("user", 40, 2), Sparse("item", 50, 2), Sparse("item_alt", 50, 2, shared_with="item"),
             Seq("hist", 50, 2, pooling="mean", shared_with="item", padding_idx=0),
             Seq("tags", 30, 2, pooling="sum")]
    model = PLE(feats, ["classification", "regression"], n_level=2, n_expert_specific=2, n_expert_shared=1,
                expert_params={"dims": [5, 4], "activation": "prelu", "dropout": 0.2},
                tower_params_list=[{"dims": [5], "activation": "prelu"}, {"dims": [3], "activation": "relu"}])
    return model, {"max_len": {"hist": 5, "tags": 4}, "task_names": ["click", "dwell"]}


def build_rechub_ple3_dice():
    """3 levels, S=1, SH=2, three tasks, Dice experts, towers of different depth/width."""
    Dense, Seq, Sparse, MLP, PLE, *_ = rechub_imports()
    feats = [Sparse("user", 30, 2), Sparse("item", 40, 2), Dense("price")]
    model = PLE(feats, ["classification", "classification", "regression"], n_level=3, n_expert_specific=1,
                n_expert_shared=2, expert_params={"dims": [4], "activation": "dice"},
                tower_params_list=[{"dims": [4], "activation": "dice"},
                                   {"dims": [3, 2], "activation": "relu"},
                                   {"dims": [], "activation": "relu"}])
    return model, {}


def build_rechub_cgc():
    """CGC = PLE with one level (no shared gate); LeakyReLU experts, Tanh towers (nn class)."""
    Dense, Seq, Sparse, MLP, PLE, *_ = rechub_imports()
    feats = [Sparse("user", 30, 3), Seq("clicks", 40, 3, pooling="mean"), Dense("score")]
    model = PLE(feats, ["classification", "classification"], n_level=1, n_expert_specific=1, n_expert_shared=1,
                expert_params={"dims": [6], "activation": "leakyrelu"},
                tower_params_list=[{"dims": [4], "activation": nn.Tanh}, {"dims": [3], "activation": "sigmoid"}])
    return model, {"max_len": 4}


def build_rechub_ple_old_tower():
    """torch-rechub <= 0.4.0 PLE: towers are MLP(D, output_layer=False), the output is the
    concatenation of the whole tower vectors (sigmoid / identity element-wise)."""
    Dense, Seq, Sparse, MLP, PLE, *_ = rechub_imports()
    feats = [Sparse("user", 30, 2), Sparse("item", 30, 2), Dense("age")]
    tower_params = [{"dims": [3], "activation": "relu"}, {"dims": [2], "activation": "prelu"}]
    model = PLE(feats, ["classification", "regression"], n_level=2, n_expert_specific=1, n_expert_shared=1,
                expert_params={"dims": [5], "activation": "relu"}, tower_params_list=tower_params)
    model.towers = nn.ModuleList(MLP(5, output_layer=False, **p) for p in tower_params)
    return model, {}


def build_rechub_mmoe():
    Dense, Seq, Sparse, MLP, PLE, MMOE, *_ = rechub_imports()
    feats = [Sparse("user", 30, 3), Sparse("item", 30, 3), Seq("hist", 30, 3, pooling="sum", padding_idx=0),
             Dense("age")]
    model = MMOE(feats, ["classification", "regression"], n_expert=3,
                 expert_params={"dims": [6], "activation": "relu"},
                 tower_params_list=[{"dims": [4], "activation": "relu"}, {"dims": [3], "activation": "prelu"}])
    return model, {"max_len": 4}


def build_rechub_shared_bottom():
    Dense, Seq, Sparse, MLP, PLE, MMOE, SharedBottom, _ = rechub_imports()
    feats = [Sparse("user", 30, 3), Sparse("item", 30, 3), Dense("ctx", embed_dim=2)]
    model = SharedBottom(feats, ["classification", "regression"],
                         bottom_params={"dims": [7, 5], "activation": "sigmoid"},
                         tower_params_list=[{"dims": [4], "activation": "relu"}, {"dims": [3], "activation": "relu"}])
    return model, {}


def build_rechub_esmm():
    """ESMM: user fields then item fields flattened; outputs [cvr, ctr, ctr*cvr]."""
    Dense, Seq, Sparse, MLP, PLE, MMOE, SharedBottom, ESMM = rechub_imports()
    user = [Sparse("user", 30, 3), Sparse("city", 10, 3), Seq("hist", 40, 3, pooling="mean", padding_idx=0)]
    item = [Sparse("item", 40, 4), Sparse("brand", 20, 4)]
    model = ESMM(user, item, cvr_params={"dims": [5], "activation": "relu"},
                 ctr_params={"dims": [4], "activation": "prelu"})
    return model, {"max_len": 4}


def build_rechub_aitm():
    """AITM, 3 tasks: per-task bottoms (BatchNorm, ReLU), information MLPs and attention
    between consecutive tasks (graph nodes, format 1.3); sparse, masked mean sequence and dense
    features; towers of different depths."""
    from torch_rechub.models.multi_task import AITM
    Dense, Seq, Sparse, *_ = rechub_imports()
    feats = [Sparse("user", 30, 3), Sparse("item", 40, 3), Seq("hist", 40, 3, pooling="mean", shared_with="item",
                                                                 padding_idx=0), Dense("age"), Dense("ctx", embed_dim=2)]
    model = AITM(feats, 3, bottom_params={"dims": [12, 8], "activation": "relu"},
                 tower_params_list=[{"dims": [6]}, {"dims": [5, 4], "activation": "prelu"}, {"dims": [4]}])
    return model, {"max_len": 5, "task_names": ["click", "cart", "buy"]}


def build_dense_ple():
    """A dense-input model: the only feature is a precomputed 8-wide embedding vector."""
    Dense, Seq, Sparse, MLP, PLE, *_ = rechub_imports()
    model = PLE([Dense("embedding", embed_dim=8)], ["classification", "classification"], n_level=2,
                n_expert_specific=1, n_expert_shared=1, expert_params={"dims": [6], "activation": "relu"},
                tower_params_list=[{"dims": [4], "activation": "relu"}, {"dims": [4], "activation": "relu"}])
    return model, {"task_names": ["ctr", "cvr"]}


def deepctr_columns(inputs):
    """Mixed DeepCTR columns: dense first in the column list; x0 is sparse, varlen, dense."""
    Sparse, VarLen, Dense = inputs.SparseFeat, inputs.VarLenSparseFeat, inputs.DenseFeat
    return [Dense("ctx", 2), Sparse("user", 30, 2), VarLen(Sparse("hist_max", 40, 3, embedding_name="item"), 4, "max"),
            Sparse("item", 40, 3), VarLen(Sparse("hist_mean", 40, 3, embedding_name="item"), 5, "mean"),
            Dense("age", 1), VarLen(Sparse("tags", 20, 2), 3, "sum")]


def build_deepctr_ple():
    """BN on, gate DNN, max/mean/sum sequences sharing a table, SH=1 < S=2 (two shared
    experts are stored, only the first is used), a regression task."""
    inputs, mt, _ = import_deepctr()
    model = mt.PLE(deepctr_columns(inputs), shared_expert_num=1, specific_expert_num=2, num_levels=2,
                   expert_dnn_hidden_units=(5, 3), gate_dnn_hidden_units=(3,), tower_dnn_hidden_units=(3,),
                   dnn_activation="prelu", dnn_use_bn=True, task_types=("binary", "regression"),
                   task_names=("ctr", "watch_time"))
    assert len(model.shared_experts[0][0]) == 2 and model.shared_expert_num == 1
    return model, {}


def build_deepctr_ple_dice():
    """DeepCTR-Torch PLE whose DNN activations are replaced by its own Dice(dim=2)
    (the library cannot build them itself: DNN passes dice_dim=3). Covers dice_bn."""
    inputs, mt, act = import_deepctr()
    cols = [inputs.SparseFeat("user", 30, 3), inputs.SparseFeat("item", 30, 3), inputs.DenseFeat("age", 1)]
    model = mt.PLE(cols, shared_expert_num=1, specific_expert_num=1, num_levels=2, expert_dnn_hidden_units=(5,),
                   gate_dnn_hidden_units=(), tower_dnn_hidden_units=(3,), dnn_use_bn=False,
                   task_types=("binary", "binary"))
    for mod in model.modules():
        if type(mod).__name__ == "DNN":
            mod.activation_layers = nn.ModuleList(act.Dice(lin.out_features, dim=2) for lin in mod.linears)
    return model, {}


def build_deepctr_mmoe():
    inputs, mt, _ = import_deepctr()
    cols = [inputs.SparseFeat("user", 30, 3), inputs.SparseFeat("item", 30, 3),
            inputs.VarLenSparseFeat(inputs.SparseFeat("hist", 30, 3, embedding_name="item"), 4, "mean"),
            inputs.DenseFeat("age", 1)]
    model = mt.MMOE(cols, num_experts=3, expert_dnn_hidden_units=(6,), gate_dnn_hidden_units=(),
                    tower_dnn_hidden_units=(3,), dnn_use_bn=True, task_types=("binary", "binary"),
                    task_names=("ctr", "cvr"))
    return model, {}


def build_deepctr_esmm():
    """DeepCTR-Torch ESMM: one PredictionLayer bias shared by both towers; [ctr, ctcvr]."""
    inputs, mt, _ = import_deepctr()
    cols = [inputs.SparseFeat("user", 30, 3), inputs.SparseFeat("item", 30, 4),
            inputs.VarLenSparseFeat(inputs.SparseFeat("hist", 30, 4, embedding_name="item"), 4, "sum"),
            inputs.DenseFeat("price", 1)]
    model = mt.ESMM(cols, tower_dnn_hidden_units=(5, 3), dnn_activation="relu", dnn_use_bn=True)
    return model, {}


def build_deepctr_shared_bottom():
    """Shared bottom with 'linear' (Identity) activations and towers with no hidden layer."""
    inputs, mt, _ = import_deepctr()
    cols = [inputs.SparseFeat("user", 30, 3), inputs.SparseFeat("item", 30, 3), inputs.DenseFeat("ctx", 2)]
    model = mt.SharedBottom(cols, bottom_dnn_hidden_units=(6, 4), tower_dnn_hidden_units=(),
                            dnn_activation="linear", task_types=("binary", "regression"),
                            task_names=("ctr", "gmv"))
    return model, {}


FIXTURES = {
    "rechub_ple2": build_rechub_ple2,
    "rechub_ple3_dice": build_rechub_ple3_dice,
    "rechub_cgc": build_rechub_cgc,
    "rechub_ple_old_tower": build_rechub_ple_old_tower,
    "rechub_mmoe": build_rechub_mmoe,
    "rechub_shared_bottom": build_rechub_shared_bottom,
    "rechub_esmm": build_rechub_esmm,
    "rechub_aitm": build_rechub_aitm,
    "dense_ple": build_dense_ple,
    "deepctr_ple": build_deepctr_ple,
    "deepctr_ple_dice": build_deepctr_ple_dice,
    "deepctr_mmoe": build_deepctr_mmoe,
    "deepctr_esmm": build_deepctr_esmm,
    "deepctr_shared_bottom": build_deepctr_shared_bottom,
}


# --------------------------------------------------------------------------- checks and writing


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(1, |b|), elementwise."""
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def build(name: str, seed: int, batch: int = BATCH):
    """Build, randomise and score one model; returns everything a fixture needs."""
    model, opts = FIXTURES[name]()
    rng = np.random.default_rng(seed)
    randomize(model, rng)
    spec = export_torch.to_spec(model, name=opts.pop("name", name), **opts)
    canon = normalize(spec)
    x = make_inputs(canon, rng, batch)
    ref_out, ref_gates = reference.forward(spec, x)
    torch_out = export_torch.run_model(model, x)
    torch_gates = export_torch.run_gates(model, x)
    if torch_out.shape != ref_out.shape:
        raise AssertionError(f"{name}: torch output {torch_out.shape} vs reference {ref_out.shape}")
    return model, spec, canon, x, ref_out, ref_gates, torch_out, torch_gates


def write_dir(out_dir: str, spec: dict, canon: dict, x: dict, files: dict) -> dict:
    """Write the three .ple variants, the inputs and the given arrays; check the files."""
    os.makedirs(out_dir, exist_ok=True)
    for fn in os.listdir(out_dir):
        os.remove(os.path.join(out_dir, fn))
    fmt.write(spec, os.path.join(out_dir, "model.ple"))
    fmt.write(spec, os.path.join(out_dir, "model_f16.ple"), dtype="f16")
    fmt.write(spec, os.path.join(out_dir, "model_f16r.ple"), round_weights_to_f16=True)
    for f in canon["features"]:
        v = x[f["name"]]
        np.save(os.path.join(out_dir, f"in_{f['name']}.npy"), v.astype(np.int64 if f["kind"] != "dense" else np.float32))
    for fn, arr in files.items():
        np.save(os.path.join(out_dir, fn), arr)
    f32 = numpy_runtime.score_file(os.path.join(out_dir, "model.ple"), x)
    f16 = numpy_runtime.score_file(os.path.join(out_dir, "model_f16.ple"), x)
    f16r = numpy_runtime.score_file(os.path.join(out_dir, "model_f16r.ple"), x)
    return {"file_f32": f32, "file_f16": f16, "file_f16r": f16r}


def check_and_summarize(name, canon, ref_out, ref_gates, torch_out, torch_gates, scored) -> dict:
    """Apply the acceptance checks; return the manifest entry."""
    err = rel_err(ref_out, torch_out.astype(np.float64))
    gate_err = rel_err(ref_gates, torch_gates.astype(np.float64))
    file_err = max(rel_err(scored["file_f32"][0], ref_out), rel_err(scored["file_f32"][1], ref_gates))
    f16_same = (np.array_equal(scored["file_f16"][0], scored["file_f16r"][0])
                and np.array_equal(scored["file_f16"][1], scored["file_f16r"][1]))
    f16_err = rel_err(scored["file_f16"][0], ref_out)
    problems = []
    if not err <= TOL:
        problems.append(f"reference vs torch {err:.3g} > {TOL}")
    if not gate_err <= TOL:
        problems.append(f"reference gates vs torch gates {gate_err:.3g} > {TOL}")
    if not file_err <= TOL:
        problems.append(f"model.ple (numpy scorer) vs reference {file_err:.3g} > {TOL}")
    if not f16_same:
        problems.append("model_f16.ple and model_f16r.ple score differently")
    if problems:
        raise AssertionError(f"{name}: " + "; ".join(problems))
    feats = []
    for f in canon["features"]:
        d = {"name": f["name"], "kind": f["kind"], "width": f["width"] if f["kind"] == "dense"
             else int(canon["tables"][f["table"]].shape[1])}
        if f["kind"] != "dense":
            d.update(table=f["table"], vocab=int(canon["tables"][f["table"]].shape[0]), id_f32=f["id_f32"])
        if f["kind"] == "sequence":
            d.update(max_len=f["max_len"], pooling=f["pooling"], pad_id=f["pad_id"])
        feats.append(d)
    outputs = []
    for o in canon["outputs"]:
        t = o["tower"] if "tower" in o else o["product"][0]
        outputs.append({"name": o["name"], "width": int(canon["towers"][t]["mlp"][-1]["weight"].shape[0]),
                        **({"tower": o["tower"]} if "tower" in o else {"product": o["product"]})})
    return {
        "features": feats,
        "x0_order": canon["x0_order"],
        "levels": [{"S": len(lv["task_experts"][0]), "SH": len(lv["shared_experts"]),
                    "shared_gate": lv["shared_gate"] is not None} for lv in canon["levels"]],
        "bottom": canon["bottom"] is not None,
        **({"nodes": [{"op": n["op"], "inputs": [n["input"]] if n["op"] == "mlp" else n["inputs"]}
                      for n in canon["nodes"]]} if canon["nodes"] else {}),
        "towers": [{"input": t["input"], "activation": t["activation"], "layers": len(t["mlp"]),
                    "layer_activations": [lay["activation"] for lay in t["mlp"]]} for t in canon["towers"]],
        "outputs": outputs,
        "batch": int(ref_out.shape[0]),
        "output_width": int(ref_out.shape[1]),
        "gate_width": int(ref_gates.shape[1]),
        "max_abs_ref_vs_torch": float(np.abs(ref_out - torch_out).max()),
        "max_rel_ref_vs_torch": err,
        "max_rel_gates_ref_vs_torch": gate_err,
        "max_rel_file_f32_vs_ref": file_err,
        "max_rel_file_f16_vs_ref": f16_err,
    }


def dump_manifest(manifest: dict) -> str:
    """JSON with one line per fixture field: readable diffs, small file."""
    blocks = []
    for name, entry in manifest.items():
        fields = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in entry.items())
        blocks.append(f" {json.dumps(name)}: {{\n{fields}\n }}")
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def make_fixture(name: str, out_root: str) -> dict:
    seed = zlib.crc32(name.encode())
    model, spec, canon, x, ref_out, ref_gates, torch_out, torch_gates = build(name, seed)
    scored = write_dir(os.path.join(out_root, name), spec, canon, x, {
        "expected_torch.npy": torch_out.astype(np.float32),
        "expected_ref.npy": ref_out.astype(np.float64),
        "gates_ref.npy": ref_gates.astype(np.float64),
    })
    entry = check_and_summarize(name, canon, ref_out, ref_gates, torch_out, torch_gates, scored)
    entry["library"] = type(model).__module__.split(".")[0]
    entry["model"] = type(model).__name__
    entry["doc"] = " ".join((FIXTURES[name].__doc__ or "").split())
    entry["seed"] = seed
    return entry


README = """\
Golden fixtures for ple-runtime: real torch-rechub 0.9.0 / DeepCTR-Torch 0.3.0 models
with seeded random weights (every parameter and BatchNorm statistic randomised), exported
with python/ple_runtime. Regenerate (deterministic) with:

    bash tools/python_env.sh /tmp/pyenv
    /tmp/pyenv/bin/python tools/make_fixtures.py            # all fixtures + examples/models
    /tmp/pyenv/bin/python tools/make_fixtures.py --only deepctr_ple

Each directory <name>/ holds:
  model.ple           f32 weights (docs/FORMAT.md 1.0)
  model_f16.ple       f16 dense weights and embedding tables (biases/activation params f32)
  model_f16r.ple      f32 file whose weights/tables are exactly model_f16.ple's values
                      (scores of model_f16.ple and model_f16r.ple must be identical)
  in_<feature>.npy    inputs, batch 37: int64 ids [B] (sparse) or [B, max_len] (sequence),
                      float32 [B, width] (dense). Sequences contain padding; rows 0 and 5
                      are all padding for features with a pad id.
  expected_torch.npy  float32 [B, output_width]: the library model's own eval output
  expected_ref.npy    float64 [B, output_width]: ple_runtime.reference (float64 forward)
  gates_ref.npy       float64 [B, gate_width]: gate softmax weights, FORMAT.md section 5 order

manifest.json lists per fixture the features, x0 order, levels, towers, outputs and the
measured errors; the generator refuses to write unless max|ref - torch| / max(1, |torch|)
<= 1e-5, the library's own gate weights match gates_ref, the written model.ple scored by
the numpy file scorer (ple_runtime.numpy_runtime) matches the reference, and model_f16.ple
scores exactly like model_f16r.ple.

Suggested tolerances for the Rust runtime (f32 arithmetic): model.ple vs expected_ref
~1e-5 relative (max |a-b| / max(1, |b|)); model_f16.ple vs the runtime's own model_f16r.ple
result: a few ulp (the same numbers are stored, only the storage type differs).
Note: an all-padding max-pooled sequence contributes about -1e9 to x0 (DeepCTR's rule), so
deepctr_ple rows 0 and 5 have large pre-activations; compare those rows relatively.
"""


def make_quickstart(out_dir: str) -> None:
    """examples/models/quickstart.ple: a small torch-rechub PLE with tasks ctr / cvr."""
    Dense, Seq, Sparse, MLP, PLE, *_ = rechub_imports()
    feats = [Sparse("user_id", 64, 4), Sparse("item_id", 64, 4), Sparse("category", 16, 4),
             Seq("recent_items", 64, 4, pooling="mean", shared_with="item_id", padding_idx=0), Dense("price")]
    model = PLE(feats, ["classification", "classification"], n_level=2, n_expert_specific=1, n_expert_shared=1,
                expert_params={"dims": [16, 8], "activation": "relu"},
                tower_params_list=[{"dims": [8], "activation": "relu"}, {"dims": [8], "activation": "relu"}])
    rng = np.random.default_rng(20240601)
    randomize(model, rng)
    spec = export_torch.to_spec(model, name="quickstart", task_names=["ctr", "cvr"], max_len={"recent_items": 6})
    canon = normalize(spec)
    x = make_inputs(canon, rng, batch=8)
    ref_out, _ = reference.forward(spec, x)
    torch_out = export_torch.run_model(model, x)
    err = rel_err(ref_out, torch_out.astype(np.float64))
    if err > TOL:
        raise AssertionError(f"quickstart: reference vs torch {err:.3g}")
    os.makedirs(out_dir, exist_ok=True)
    fmt.write(spec, os.path.join(out_dir, "quickstart.ple"))
    inp_dir = os.path.join(out_dir, "quickstart_inputs")
    if os.path.isdir(inp_dir):
        shutil.rmtree(inp_dir)
    os.makedirs(inp_dir)
    for f in canon["features"]:
        np.save(os.path.join(inp_dir, f"in_{f['name']}.npy"), x[f["name"]])
    np.save(os.path.join(inp_dir, "expected.npy"), torch_out.astype(np.float32))
    with open(os.path.join(out_dir, "README.md"), "w") as fh:
        fh.write(QUICKSTART_README.format(err=err, out=np.array2string(torch_out[:2], precision=6)))
    print(f"quickstart: max rel ref vs torch {err:.2e}")


QUICKSTART_README = """\
# Example models

`quickstart.ple` is a small, real [torch-rechub](https://pypi.org/project/torch-rechub/) 0.9.0
`PLE` model (random weights: it was not trained) exported with `python/ple_runtime`:

- tasks `ctr` and `cvr` (both classification: sigmoid outputs), output row `[ctr, cvr]`;
- 2 extraction levels, 1 task-specific + 1 shared expert per task, experts `[16, 8]` ReLU,
  towers `[8]` ReLU + a final Linear;
- features (x0 = embeddings in list order, then dense):
  - `user_id`, `item_id`, `category`: sparse ids (int64), vocab 64 / 64 / 16, dim 4;
  - `recent_items`: sequence of 6 item ids (int64 `[B, 6]`, shares `item_id`'s table),
    mean pooling, padding id 0 (padding does not count; all padding gives zeros);
  - `price`: one dense float.

`quickstart_inputs/` holds a batch of 8: `in_<feature>.npy` (ids int64, dense float32
`[8, 1]`) and `expected.npy`, the torch model's own output (float32 `[8, 2]`). The float64
reference agreed with it to {err:.1e} (relative).

Regenerate (deterministic, seed 20240601) with

    bash tools/python_env.sh /tmp/pyenv
    /tmp/pyenv/bin/python tools/make_fixtures.py --only quickstart

Export your own model the same way:

```python
from ple_runtime.export_torch import export
export(model.eval(), "model.ple", task_names=["ctr", "cvr"], max_len={{"recent_items": 6}})
```

Inspect or score it with the Rust CLI (`ple`):

    ple inspect examples/models/quickstart.ple
    ple score examples/models/quickstart.ple --input examples/models/quickstart_inputs

or check it with the Python reader: `PYTHONPATH=python python -m ple_runtime inspect examples/models/quickstart.ple`.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    parser.add_argument("--examples", default=os.path.join(REPO, "examples", "models"))
    parser.add_argument("--only", default="", help="comma-separated fixture names (or 'quickstart')")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n for n in args.only.split(",") if n] or list(FIXTURES) + ["quickstart"]
    unknown = [n for n in names if n not in FIXTURES and n != "quickstart"]
    if unknown:
        parser.error(f"unknown fixtures {unknown}; known: {', '.join(FIXTURES)}, quickstart")
    os.makedirs(args.out, exist_ok=True)
    manifest_path = os.path.join(args.out, "manifest.json")
    manifest = {}
    if os.path.exists(manifest_path) and args.only:
        with open(manifest_path) as fh:
            manifest = json.load(fh)
    for name in names:
        if name == "quickstart":
            make_quickstart(args.examples)
            continue
        entry = make_fixture(name, args.out)
        manifest[name] = entry
        size = sum(os.path.getsize(os.path.join(args.out, name, f)) for f in os.listdir(os.path.join(args.out, name)))
        print(f"{name:24s} out {entry['batch']}x{entry['output_width']} gates {entry['gate_width']:3d}  "
              f"max|ref-torch| {entry['max_abs_ref_vs_torch']:.2e} rel {entry['max_rel_ref_vs_torch']:.2e}  "
              f"gates {entry['max_rel_gates_ref_vs_torch']:.1e} file {entry['max_rel_file_f32_vs_ref']:.1e} "
              f"f16 {entry['max_rel_file_f16_vs_ref']:.1e}  {size / 1024:.1f} KiB")
    manifest = {k: manifest[k] for k in list(FIXTURES) if k in manifest}
    with open(manifest_path, "w") as fh:
        fh.write(dump_manifest(manifest))
    with open(os.path.join(args.out, "README.txt"), "w") as fh:
        fh.write(README)
    return 0


if __name__ == "__main__":
    sys.exit(main())
