"""Split-brain pre-training then fine-tuning end to end through the command line (issue 6), on generated colour
images in CIFAR-10's size, and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from convscope.cli import main
from tests.cli_helpers import cli, one_error_line
from tests.data.helpers import make_imagefolder

# Tiny: narrow encoders, one or two epochs of a few batches.
TINY = ["--batch-size", "4", "--precision", "fp32", "--quiet", "--set", "model.widths=[4,8,8]",
        "--set", "data.eval_batch_size=8"]  # fmt: skip
FINETUNE = [*TINY, "--recipe", "cifar10-splitbrain-finetune", "--epochs", "2", "--set", "data.label_fraction=0.5",
            "--set", "model.hidden=8", "--set", "data.valid_fraction=0"]  # fmt: skip


@pytest.fixture(scope="module")
def colour(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_imagefolder(tmp_path_factory.mktemp("colour"), ("cat", "dog"), per_class=6, size=(32, 32),
                            splits=("train", "test"))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def pretrained(colour: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "pretrain"
    code = main(["train", "--recipe", "cifar10-splitbrain", "--data", f"imagefolder:{colour}", "--epochs", "1",
                 "--out", str(run), *TINY])  # fmt: skip
    assert code == 0
    return run


def test_pretraining_draws_the_colours_and_measures_both_halves(pretrained: Path):
    summary = json.loads((pretrained / "summary.json").read_text())
    assert summary["task"] == "splitbrain" and 0 <= summary["test_accuracy"] <= 1
    assert {"ab_accuracy", "l_accuracy", "ab_loss", "l_loss"} <= set(summary["test"])
    assert (pretrained / "plots" / "colours-epoch-1.png").stat().st_size > 1000


def test_finetune_starts_from_the_split_brain_run_and_a_linear_probe_keeps_its_encoders(
    capsys, colour: Path, pretrained: Path, tmp_path: Path
):
    data = f"imagefolder:{colour}"
    code, out, err = cli(capsys, "train", *FINETUNE, "--data", data, "--out", tmp_path / "ft",
                         "--set", f"transfer.init={pretrained}")  # fmt: skip
    assert code == 0, err
    assert f"init: loaded 100 of 109 tensors from {pretrained}" in out, out  # all but the head
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert summary["task"] == "splitbrain-finetune" and "top5_accuracy" not in summary["test"]  # 2 classes

    code, out, err = cli(capsys, "train", *FINETUNE, "--data", data, "--out", tmp_path / "probe",
                         "--set", f"transfer.init={pretrained}", "--set", "transfer.freeze_epochs=2",
                         "--set", "model.classifier=shallow")  # fmt: skip
    assert code == 0, err
    before = load_file(pretrained / "model.safetensors")
    probe = load_file(tmp_path / "probe" / "model.safetensors")
    tuned = load_file(tmp_path / "ft" / "model.safetensors")
    assert len(before) == 100
    # Weights and batch-norm statistics of both encoders are those of the pre-training run...
    assert all(probe[f"features.{key}"].equal(value) for key, value in before.items())
    # ...while full fine-tuning changed them, and the probe's classifier did learn.
    assert not all(tuned[f"features.{key}"].equal(value) for key, value in before.items())
    assert probe["head.2.weight"].shape == (2, 725 * 64)  # shallow: one linear layer on 64 cells of 725 scores


def test_bad_inputs_are_one_error_line(capsys, colour: Path, pretrained: Path, tmp_path: Path):
    grey = make_imagefolder(tmp_path / "grey", ("a", "b"), per_class=3, size=(32, 32), mode="L",
                            splits=("train", "test"))  # fmt: skip
    code, _, err = cli(capsys, "train", "--recipe", "cifar10-splitbrain", "--data", f"imagefolder:{grey}",
                       "--out", tmp_path / "g", *TINY)  # fmt: skip
    assert code == 2 and "greyscale" in one_error_line(err) and str(grey) in err

    data = f"imagefolder:{colour}"
    code, _, err = cli(capsys, "train", *FINETUNE, "--data", data, "--out", tmp_path / "ok")
    assert code == 0, err  # from scratch: no init needed
    code, _, err = cli(capsys, "train", *FINETUNE, "--data", data, "--out", tmp_path / "x",
                       "--set", f"transfer.init={tmp_path / 'ok'}")  # fmt: skip
    assert code == 2 and "is a 'splitbrain-classifier' run, not a run of model 'splitbrain'" in one_error_line(err)

    for fraction in ("0", "1.5", "-0.1"):
        code, _, err = cli(capsys, "train", *FINETUNE, "--data", data, "--out", tmp_path / "y",
                           "--set", f"data.label_fraction={fraction}")  # fmt: skip
        assert code == 2 and f"data.label_fraction = {float(fraction)}: expected a fraction in (0, 1]" in (
            one_error_line(err)
        )


def test_bench_lists_the_study(capsys):
    code, out, _ = cli(capsys, "bench")
    assert code == 0 and "splitbrain" in out and "1% of the labels" in out
