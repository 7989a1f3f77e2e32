"""python -m ple_runtime export | verify | inspect."""

import sys
import textwrap

import numpy as np
import pytest

try:
    import torch
    import torch_rechub  # noqa: F401
except Exception as exc:
    pytest.skip(f"torch / torch-rechub not usable: {exc}", allow_module_level=True)

import ple_runtime  # noqa: E402
from _util import load_make_fixtures  # noqa: E402
from ple_runtime.__main__ import main  # noqa: E402

mf = load_make_fixtures()

FACTORY = textwrap.dedent("""
    import torch
    from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature
    from torch_rechub.models.multi_task import PLE

    def build():
        torch.manual_seed(7)
        feats = [SparseFeature("user_id", 20, 4), SparseFeature("item_id", 30, 4),
                 SequenceFeature("hist", 30, 4, pooling="mean", shared_with="item_id", padding_idx=0),
                 DenseFeature("price")]
        model = PLE(feats, ["classification", "classification"], n_level=2, n_expert_specific=1,
                    n_expert_shared=1, expert_params={"dims": [8], "activation": "relu"},
                    tower_params_list=[{"dims": [4]}, {"dims": [4]}])
        with torch.no_grad():  # "trained" weights: BatchNorm statistics away from their defaults
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.running_mean.uniform_(-0.3, 0.3)
                    m.running_var.uniform_(0.5, 1.5)
        return model.eval()

    model = build()
""")


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    yield "my_models"
    sys.modules.pop("my_models", None)


def test_export_and_verify_from_a_factory(factory_module, tmp_path, capsys):
    out = tmp_path / "m.ple"
    assert main(["export", f"{factory_module}:build", str(out), "--task-names", "ctr,cvr",
                 "--max-len", "hist=6", "--verify", "--batch", "64"]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "['ctr', 'cvr']" in text and "OK: worst" in text
    m = ple_runtime.Model(out)
    assert m.output_names == ["ctr", "cvr"] and m.input("hist").max_len == 6
    # an attribute holding a model works too
    assert main(["verify", f"{factory_module}:model", str(out), "--batch", "32"]) == 0
    assert main(["inspect", str(out), "--native"]) == 0
    text = capsys.readouterr().out
    assert "sequence int64 [B, 6]" in text and "libple" in text


def test_export_from_torch_save_and_state_dict(factory_module, tmp_path, capsys):
    import my_models

    model = my_models.build()
    mf.randomize(model, np.random.default_rng(0))
    torch.save(model, tmp_path / "full.pt")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    assert main(["export", str(tmp_path / "full.pt"), str(tmp_path / "a.ple"), "--max-len", "6"]) == 0
    assert main(["export", f"{factory_module}:build", str(tmp_path / "b.ple"), "--max-len", "6",
                 "--state-dict", str(tmp_path / "weights.pt"), "--dtype", "f16"]) == 0
    x = ple_runtime.random_inputs(ple_runtime.Model(tmp_path / "a.ple"), 50)
    a = ple_runtime.Model(tmp_path / "a.ple").predict(x)
    b = ple_runtime.Model(tmp_path / "b.ple").predict(x)
    assert 0 < np.abs(a - b).max() < 1e-2  # same weights, f16 storage
    # verify with inputs from a directory of in_<name>.npy files
    for name, v in x.items():
        np.save(tmp_path / f"in_{name}.npy", v)
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "full.pt"), str(tmp_path / "b.ple"), "--inputs", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "(f16, batch 50)" in text and "stochastic rounding" in text
    # a state_dict is not a model
    with pytest.raises(SystemExit, match="state_dict"):
        main(["export", str(tmp_path / "weights.pt"), str(tmp_path / "c.ple")])


def test_verify_fails_with_exit_code_2(factory_module, tmp_path, capsys):
    import my_models

    model = my_models.build()
    ple_runtime.export(model, tmp_path / "m.ple", max_len=6)
    with torch.no_grad():
        model.towers[0].mlp[0].bias += 0.05
    torch.save(model, tmp_path / "changed.pt")
    assert main(["verify", str(tmp_path / "changed.pt"), str(tmp_path / "m.ple"), "--batch", "64"]) == 2
    assert "FAILED" in capsys.readouterr().out


def test_export_refusal_is_reported(factory_module, tmp_path, capsys):
    assert main(["export", f"{factory_module}:build", str(tmp_path / "m.ple"), "--task-names", "ctr"]) == 1
    assert "task_names: 1 names for 2 outputs" in capsys.readouterr().err


def test_export_without_max_len_bounds_sequences_at_256(factory_module, tmp_path):
    out = tmp_path / "m.ple"
    assert main(["export", f"{factory_module}:build", str(out)]) == 0  # hist has a padding_idx
    assert ple_runtime.Model(out).input("hist").max_len == 256


def test_export_md_ten_lines(tmp_path, monkeypatch, capsys):
    """docs/EXPORT.md's opening example, as written (with a randomised torch-rechub PLE)."""
    from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature
    from torch_rechub.models.multi_task import PLE

    feats = [SparseFeature("user_id", 50, 4), SparseFeature("item_id", 80, 4),
             SequenceFeature("recent_items", 80, 4, pooling="mean", shared_with="item_id", padding_idx=0),
             DenseFeature("price")]
    model = PLE(feats, ["classification", "classification"], n_level=2, n_expert_specific=1, n_expert_shared=1,
                expert_params={"dims": [16, 8]}, tower_params_list=[{"dims": [8]}, {"dims": [8]}])
    mf.randomize(model, np.random.default_rng(2))
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    uids, iids = rng.integers(0, 50, 4), rng.integers(0, 80, 4)
    padded_ids = np.array([[5, 6, 7] + [0] * 17, [1] + [0] * 19, [0] * 20, list(range(1, 21))])
    prices = rng.normal(size=4).astype(np.float32)

    import ple_runtime
    # model: your trained torch_rechub.models.multi_task.PLE (features user_id, item_id, recent_items, price)
    ple_runtime.export(model, "model.ple", task_names=["ctr", "cvr"], max_len={"recent_items": 20})
    ple_runtime.verify(model, "model.ple")        # 1024 random valid inputs; raises VerifyError above 1e-5
    m = ple_runtime.Model("model.ple")            # libple, through its C ABI
    scores = m.predict({"user_id": uids, "item_id": iids, "recent_items": padded_ids, "price": prices})

    assert scores.shape == (4, 2) and m.output_names == ["ctr", "cvr"]
    assert "OK: worst" in capsys.readouterr().out
    x = {"user_id": uids, "item_id": iids, "recent_items": padded_ids, "price": prices}
    assert np.abs(scores - ple_runtime.export_torch.run_model(model, x)).max() <= 1e-5
