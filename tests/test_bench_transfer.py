"""The transfer study keeps finished runs and resumes an interrupted one, so a long study survives a restart."""

import json

import pytest

from convscope import api
from convscope.bench import transfer as bench_transfer
from convscope.bench.runs import timed_run
from convscope.errors import UserError


def test_a_finished_run_is_kept_and_an_interrupted_one_resumed(tmp_path, monkeypatch):
    calls = []

    def fake_train(recipe, *, out, resume=False):
        calls.append((out.name, resume))
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps({"test_accuracy": 0.5}))

    monkeypatch.setattr(api, "train", fake_train)
    finished, interrupted = tmp_path / "finished", tmp_path / "interrupted"
    finished.mkdir()
    (finished / "summary.json").write_text(json.dumps({"test_accuracy": 0.9}))
    (interrupted / "checkpoints").mkdir(parents=True)

    summary, wall = timed_run("cifar5-pretrain", {}, finished)
    assert (summary["test_accuracy"], wall, calls) == (0.9, None, [])

    summary, wall = timed_run("cifar5-fewshot", {}, interrupted)
    assert calls == [("interrupted", True)] and summary["test_accuracy"] == 0.5 and wall >= 0

    summary, _ = timed_run("cifar5-fewshot", {}, tmp_path / "fresh")
    assert calls[-1] == ("fresh", False)


def test_scratch_trains_every_layer_at_the_full_lr_and_transfer_starts_from_the_pretraining(tmp_path, monkeypatch):
    recipes = {}

    def fake_train(recipe, *, out, resume=False):
        recipes[out.name] = recipe
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps({"test_accuracy": 0.5, "train_seconds": 1.0}))

    monkeypatch.setattr(api, "train", fake_train)
    bench_transfer.run_transfer_study(out=tmp_path / "t.json", overrides={}, results_dir=tmp_path, machine={},
                                      run_dir=tmp_path / "study")  # fmt: skip
    scratch, transfer = recipes["scratch-seed0"].transfer, recipes["transfer-seed0"].transfer
    assert (scratch.freeze_epochs, scratch.layer_lr_decay, scratch.freeze_bn_stats, scratch.init) == (0, 1.0, False, "")
    assert transfer.init == str(tmp_path / "study" / "pretrain") and transfer.freeze_epochs > 0


def test_the_gain_is_the_mean_over_draws_each_with_its_own_seed(tmp_path, monkeypatch):
    seeds = {}

    def fake_train(recipe, *, out, resume=False):
        seeds[out.name] = recipe.train.seed
        accuracy = {"pretrain": 0.9, "scratch": 0.70, "transfer": 0.78}[out.name.split("-")[0]]
        accuracy += 0.04 * recipe.train.seed if out.name.startswith("transfer") else 0  # draws differ
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps({"test_accuracy": accuracy, "train_seconds": 1.0}))

    monkeypatch.setattr(api, "train", fake_train)
    result = bench_transfer.run_transfer_study(out=tmp_path / "t.json", overrides={}, results_dir=tmp_path,
                                               machine={}, run_dir=tmp_path / "study")  # fmt: skip
    assert [d["seed"] for d in result["draws"]] == [0, 1, 2]
    assert seeds["scratch-seed2"] == seeds["transfer-seed2"] == 2
    assert [d["gain_points"] for d in result["draws"]] == [8.0, 12.0, 16.0]
    assert result["gain_points"] == 12.0 and result["reached"]
    assert json.loads((tmp_path / "t.json").read_text())["scratch_accuracy"] == pytest.approx(0.70)

    one = bench_transfer.run_transfer_study(out=tmp_path / "one.json", overrides={"train.seed": "5"},
                                            results_dir=tmp_path, machine={}, run_dir=tmp_path / "one")  # fmt: skip
    assert [d["seed"] for d in one["draws"]] == [5] and seeds["pretrain"] != 5

    with pytest.raises(UserError, match=r"train\.seed: expected an integer"):
        bench_transfer.run_transfer_study(out=tmp_path / "bad.json", overrides={"train.seed": "abc"},
                                          results_dir=tmp_path, machine={}, run_dir=tmp_path / "bad")  # fmt: skip
