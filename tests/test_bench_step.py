"""`convscope bench step`: the levers of the training step measured against the bare step, on a tiny data set."""

import json

import pytest

from convscope.bench import step
from convscope.errors import UserError
from tests.data.helpers import make_idx


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST", str(make_idx(tmp_path / "fashion", n=64, n_test=16)))
    monkeypatch.setattr(step, "TIMED_IMAGES", 64)
    monkeypatch.setattr(step, "WARMUP_STEPS", 1)
    monkeypatch.setattr(step, "PROFILED_STEPS", 1)


def test_levers_are_measured_against_bare_and_written(tmp_path, fake_fashion):
    names = ("bare", "fp32", "batch-half", "fused-optimizer", "two-processes")
    levers = tuple(lever for lever in step.LEVERS if lever.name in names)
    overrides = {"train.batch_size": "16", "model.widths": "[4,8,8]", "optim.name": "sgd", "optim.lr": "0.1"}
    result = step.run_step_study(out=tmp_path / "step.json", overrides=overrides, results_dir=tmp_path,
                                 machine={"cpu": "test"}, recipes=("fashion-mnist",), levers=levers,
                                 rounds=2)  # fmt: skip
    written = json.loads((tmp_path / "step.json").read_text())
    assert written["command"].startswith("convscope bench step")
    figures = result["recipes"]["fashion-mnist"]
    rows = figures["levers"]
    assert set(rows) == set(names)
    assert rows["bare"]["ratio_to_bare"] == 1.0 and len(rows["bare"]["runs"]) == 2  # both rounds kept
    assert rows["batch-half"]["batch_size"] == 8 and rows["bare"]["batch_size"] == 16
    assert rows["two-processes"]["batch_size"] == 16  # the same batch, split over the processes
    for row in rows.values():
        assert row["images_per_second"] > 0 and 0 < row["flops_fraction"] < 1
    assert figures["training_flops_per_image"] > 0
    assert figures["profile_bare"] and {"operator", "calls", "self_cpu_ms", "share"} <= set(figures["profile_bare"][0])


def test_an_optimiser_without_the_implementation_says_so(tmp_path, fake_fashion):
    levers = tuple(lever for lever in step.LEVERS if lever.name in ("bare", "fused-optimizer"))
    overrides = {
        "train.batch_size": "16",
        "model.widths": "[4,8,8]",
        "optim.name": "muon",  # the fashion-mnist recipe's own
    }
    result = step.run_step_study(out=tmp_path / "step.json", overrides=overrides, results_dir=tmp_path,
                                 machine={}, recipes=("fashion-mnist",), levers=levers, rounds=1)  # fmt: skip
    row = result["recipes"]["fashion-mnist"]["levers"]["fused-optimizer"]
    assert row["images_per_second"] is None and "muon" in row["runs"][0]["why"]


def test_no_round_is_an_error(tmp_path):
    with pytest.raises(UserError, match="rounds = 0"):
        step.run_step_study(out=None, overrides={}, results_dir=tmp_path, machine={}, rounds=0)
