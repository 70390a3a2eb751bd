"""A user's own folder of photographs, as a new user would try it: the defaults train, transfer from a run of
another data set does not keep a diverged model, and every file says which recipe ran on which data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convscope.bench.own_photos import OTHER_PHOTOS, PHOTOS, photo_folder
from convscope.config import read_toml
from tests.cli_helpers import cli

pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return photo_folder(tmp_path_factory.mktemp("own") / "photos", PHOTOS)


QUICK = ["--set", "data.image_size=32", "--precision", "fp32", "--quiet"]


def test_the_defaults_learn_a_small_folder_and_say_what_they_chose(capsys, photos: Path, tmp_path: Path):
    run = tmp_path / "run"
    code, out, err = cli(capsys, "train", "--data", f"imagefolder:{photos}", "--epochs", "4", "--out", run, *QUICK)
    assert code == 0, err
    assert "note: no --recipe" in out and "'classify'" in out
    assert "training with batch" in out and "steps per epoch" in out
    assert "images 3x32x32 (data.image_size, crop)" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recipe"] == "classify" and summary["data"] == f"imagefolder:{photos}"
    assert summary["batch_size"] < 128 and summary["test_images"] == 15
    low, high = summary["test_accuracy_ci95"]
    assert low < summary["test_accuracy"] < high or summary["test_accuracy"] in (low, high)
    assert "95% interval" in out and "a small test split" in out
    assert summary["test_accuracy"] > 0.6, summary  # chance is 1/3
    # The adapted batch is what the run's recipe holds, so --resume and --recipe RUN/config.toml train alike.
    assert read_toml(run / "config.toml")["train"]["batch_size"] == summary["batch_size"]


def test_transfer_from_another_data_sets_run_resets_what_does_not_carry_over(capsys, photos: Path, tmp_path: Path):
    other = photo_folder(tmp_path / "other", OTHER_PHOTOS)
    source = tmp_path / "source"
    code, out, err = cli(capsys, "train", "--recipe", "cifar10", "--data", f"imagefolder:{other}", "--epochs", "2",
                         "--out", source, *QUICK)  # fmt: skip
    assert code == 0, err
    assert "recipe 'cifar10' (written for 'cifar10') on data" in out
    target = tmp_path / "target"
    code, out, err = cli(capsys, "train", "--recipe", source / "config.toml", "--data", f"imagefolder:{photos}",
                         "--set", f"transfer.init={source}", "--set", "transfer.freeze_epochs=2", "--epochs", "4",
                         "--out", target, *QUICK)  # fmt: skip
    assert code == 0, err
    # The source's batch of 2000 was fitted to the other folder; its Muon rates scaled with it carry over.
    assert read_toml(source / "config.toml")["train"]["batch_size"] < 100
    summary = json.loads((target / "summary.json").read_text())
    assert summary["recipe_data"] == "cifar10" and summary["data"] == f"imagefolder:{photos}"
    assert summary["test_accuracy"] > 0.5, summary
    assert summary.get("diverged") is None or "kept" in summary["diverged"]
