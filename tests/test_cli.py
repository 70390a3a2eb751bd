"""End to end through the command line, on tiny generated data sets in every supported format."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_helpers import cli, one_error_line
from tests.data.helpers import make_archive, make_cifar_python, make_csv_folder, make_idx, make_image, make_imagefolder

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")

# Small and quick: a tiny network, two epochs, fp32 so results do not depend on the CPU's bf16 support.
QUICK = [
    "--model",
    "fastnet-small",
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--precision",
    "fp32",
    "--quiet",
    "--set",
    "data.valid_fraction=0.25",
    "--set",
    "data.eval_batch_size=16",
]


def train(capsys, data: str, out: Path, *extra: str) -> Path:
    code, _, err = cli(capsys, "train", "--data", data, "--out", out, *QUICK, *extra)
    assert code == 0, err
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_imagefolder(tmp_path / "pets", ("cat", "dog"), per_class=12, size=(16, 16), splits=("train", "test"))


def test_train_evaluate_predict(capsys, folder: Path, tmp_path: Path):
    run = train(capsys, f"imagefolder:{folder}", tmp_path / "run")
    for name in (
        "config.toml",
        "run.json",
        "metrics.csv",
        "model.safetensors",
        "summary.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "plots/history.png",
        "plots/schedule.png",
    ):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    for key in (
        "task",
        "dataset",
        "model",
        "epochs",
        "train_seconds",
        "test_accuracy",
        "test_loss",
        "best_valid_accuracy",
    ):
        assert key in summary
    assert summary["epochs"] == 2 and summary["model"] == "fastnet-small"
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"train", "valid"}
    assert sum(r["split"] == "valid" for r in rows) == 2
    info = json.loads((run / "run.json").read_text())
    assert info["classes"] == ["cat", "dog"] and info["sizes"] == {"train": 18, "valid": 6, "test": 24}

    code, out, err = cli(capsys, "evaluate", run)
    assert code == 0, err
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["images"] == 24
    assert sum(map(sum, evaluation["confusion_matrix"])) == 24
    assert set(evaluation["per_class_accuracy"]) == {"cat", "dog"}
    assert evaluation["error_rate"] == pytest.approx(1 - evaluation["accuracy"])
    assert "cat" in out and (run / "plots" / "confusion_matrix.png").is_file()
    # Seed 002's metrics: balanced error rate, per-class rates, ROC (binary here) and precision-recall.
    assert evaluation["roc"]["kind"] == "binary" and evaluation["roc"]["positive_class"] == "dog"
    assert 0 <= evaluation["roc"]["binary_auc"] <= 1 and set(evaluation["roc"]["curves"]) == {"cat", "dog"}
    rates = evaluation["true_positive_rate"]
    assert evaluation["balanced_error_rate"] == pytest.approx(1 - (rates["cat"] + rates["dog"]) / 2)
    assert rates == pytest.approx(evaluation["per_class_accuracy"])
    assert set(evaluation["false_positive_rate"]) == set(evaluation["precision_recall"]["average_precision"])
    assert "balanced error rate" in out and "FP rate" in out
    assert (run / "plots" / "roc.png").is_file() and (run / "plots" / "precision_recall.png").is_file()

    # A raw file of another size and mode goes through the evaluation transform.
    photo = make_image(tmp_path / "photo.jpg", size=(40, 30), mode="L")
    code, out, err = cli(capsys, "predict", run, photo, folder / "test" / "dog" / "000.png", "--json")
    assert code == 0, err
    results = json.loads(out)
    assert len(results) == 2
    for result in results:
        assert {t["class"] for t in result["top"]} == {"cat", "dog"}
        assert sum(t["p"] for t in result["top"]) == pytest.approx(1.0, abs=1e-4)

    code, out, err = cli(capsys, "plot", run)
    assert code == 0 and "history.png" in out


def test_muon_without_validation_split(capsys, folder: Path, tmp_path: Path):
    """The cifar10 recipe's settings in miniature: Muon, the airbench fastnet options, no validation split."""
    settings = ["optim.name=muon", "optim.lr=0.24", "optim.linear_lr=5.0", "optim.bias_lr=0.4", "optim.nesterov=true",
                "optim.scheduler=linear", "optim.weight_decay=0.004", "model.dirac=true", "model.bn_scale=false",
                "model.bn_momentum=0.4", "model.head_std=1", "data.valid_fraction=0"]  # fmt: skip
    run = train(capsys, f"imagefolder:{folder}", tmp_path / "run", *(a for s in settings for a in ("--set", s)))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_valid_accuracy"] is None  # no split, no figure (not a 0)
    assert summary["test_accuracy"] is not None
    assert (run / "checkpoints/last.pt").is_file()


def _archive(root: Path, fmt: str) -> str:
    return f"imagefolder:{make_archive(make_imagefolder(root / 'a', per_class=8, size=(16, 16)), fmt)}"


def _folder(root: Path, mode: str, ext: str) -> str:
    return f"imagefolder:{make_imagefolder(root / 'f', per_class=8, size=(16, 16), mode=mode, ext=ext)}"


FORMATS = {
    "idx-gz": lambda root: f"mnist:{make_idx(root / 'idx', n=40, n_test=10, gz=True)}",
    "idx-raw": lambda root: f"mnist:{make_idx(root / 'idx', n=40, n_test=10, gz=False)}",
    "csv": lambda root: f"csv:{make_csv_folder(root / 'histo', labels=['0', '1'] * 12, size=(16, 16))}",
    "tar.gz": lambda root: _archive(root, "tar.gz"),
    "zip": lambda root: _archive(root, "zip"),
    **{
        f"{mode}-{ext}": (lambda root, mode=mode, ext=ext: _folder(root, mode, ext))
        for mode, ext in [
            ("L", "png"),
            ("RGBA", "png"),
            ("P", "bmp"),
            ("CMYK", "jpg"),
            ("I;16", "png"),
            ("RGB", "tif"),
            ("RGB", "webp"),
        ]
    },
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_trains(capsys, tmp_path: Path, fmt: str):
    spec = FORMATS[fmt](tmp_path)
    run = train(capsys, spec, tmp_path / "run", "--epochs", "1")
    assert json.loads((run / "summary.json").read_text())["test_accuracy"] is not None


def test_cifar_python_archive_through_import(capsys, tmp_path: Path):
    archive = make_cifar_python(tmp_path, per_batch=6, n_test=10)
    code, out, err = cli(capsys, "data", "import", "tinycifar", archive)
    assert code == 0, err
    assert "30 train" in out and "10 test" in out
    code, out, _ = cli(capsys, "data", "list")
    assert "tinycifar" in out
    code, out, _ = cli(capsys, "data", "info", "tinycifar")
    assert json.loads(out)["classes"][0] == "airplane"
    run = train(capsys, "tinycifar", tmp_path / "run", "--epochs", "1", "--model", "cifar-cnn")
    assert json.loads((run / "run.json").read_text())["channels"] == 3


def test_listings(capsys):
    code, out, _ = cli(capsys, "recipes")
    assert code == 0 and "seed004-selu" in out and "fashion-mnist" in out
    code, out, _ = cli(capsys, "models")
    assert code == 0 and "selu-lenet" in out and "fastnet" in out
    code, out, _ = cli(capsys, "bench")
    assert code == 0 and "demo-fashion" in out


def test_bad_inputs(capsys, folder: Path, tmp_path: Path):
    empty = make_imagefolder(tmp_path / "empty", ("a", "b"), per_class=2, size=(16, 16))
    for image in (empty / "b").iterdir():
        image.unlink()
    histo = make_csv_folder(tmp_path / "histo", labels=["0", "1"] * 4, size=(16, 16))
    missing_id = (histo / "train_labels.csv").read_text().splitlines()[3].split(",")[0]
    next((histo / "train").glob(f"{missing_id}.*")).unlink()
    cases = [
        (["train", "--data", f"imagefolder:{tmp_path / 'nowhere'}"], "nowhere"),
        (["train", "--data", f"imagefolder:{empty}"], "b"),
        (["train", "--data", f"csv:{histo}", *QUICK], missing_id),
        (["train", "--data", f"imagefolder:{folder}", "--model", "nonet"], "unknown model 'nonet'"),
        (["train", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["train", "--set", "train.epochz=3"], "epochz"),
        (["train", "--set", "optim.lr=fast"], "optim.lr"),
        (["train", "--epochs", "abc"], "train.epochs"),
        (["train", "--data", f"imagefolder:{folder}", "--set", "model.depth=3", *QUICK], "depth"),
        (["train", "--resume", "--out", tmp_path / "no-run"], "no-run"),
        (["evaluate", tmp_path / "no-run"], "no-run"),
        (["predict", tmp_path / "no-run", "x.png"], "no-run"),
        (["frobnicate"], "frobnicate"),
        (["train", "--set", "novalue"], "KEY=VALUE"),
    ]
    for argv, fragment in cases:
        code, _, err = cli(capsys, *argv)
        assert code == 2, argv
        assert fragment in one_error_line(err), (argv, err)


def test_corrupt_image_is_named_and_skip_bad_skips_it(capsys, folder: Path, tmp_path: Path):
    bad = folder / "train" / "cat" / "broken.png"
    bad.write_bytes((folder / "train" / "cat" / "000.png").read_bytes()[:40])
    code, _, err = cli(capsys, "train", "--data", f"imagefolder:{folder}", "--out", tmp_path / "r1", *QUICK)
    assert code == 2 and "broken.png" in one_error_line(err)
    code, out, err = cli(
        capsys, "train", "--data", f"imagefolder:{folder}", "--out", tmp_path / "r2", *QUICK, "--skip-bad"
    )
    assert code == 0, err
    assert "broken.png" in out
    info = json.loads((tmp_path / "r2" / "run.json").read_text())
    assert info["sizes"]["train"] + info["sizes"]["valid"] == 24  # the 24 good training images
    assert [Path(p).name for p in info["skipped"]] == ["broken.png"]


def test_weights_of_another_model_are_refused(capsys, folder: Path, tmp_path: Path):
    small = train(capsys, f"imagefolder:{folder}", tmp_path / "small", "--epochs", "1")
    other = train(capsys, f"imagefolder:{folder}", tmp_path / "other", "--epochs", "1", "--model", "cifar-cnn")
    (small / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    code, _, err = cli(capsys, "evaluate", small)
    assert code == 2 and "different model" in one_error_line(err)


def test_resume_needs_a_checkpoint(capsys, folder: Path, tmp_path: Path):
    run = tmp_path / "run"
    train(capsys, f"imagefolder:{folder}", run, "--epochs", "1")
    for checkpoint in (run / "checkpoints").iterdir():
        checkpoint.unlink()
    code, _, err = cli(capsys, "train", "--resume", "--out", run)
    assert code == 2 and "no checkpoint" in one_error_line(err)
    code, _, err = cli(capsys, "train", "--data", f"imagefolder:{folder}", "--out", run, *QUICK)
    assert code == 2 and "--resume" in one_error_line(err)


def _metrics_without_time(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(tmp_path: Path, convscope_home: Path):
    data = make_imagefolder(tmp_path / "d", ("a", "b", "c"), per_class=40, size=(16, 16), splits=("train", "test"))
    args = ["train", "--data", f"imagefolder:{data}", *QUICK, "--epochs", "3", "--set", "train.checkpoint_every=3"]
    env = {**os.environ, "CONVSCOPE_HOME": str(convscope_home)}
    command = [sys.executable, "-m", "convscope"]
    subprocess.run([*command, *args, "--out", tmp_path / "whole"], env=env, check=True, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [*command, *args, "--out", killed], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "last.pt").exists():
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "summary.json").exists()

    subprocess.run([*command, "train", "--resume", "--out", killed], env=env, check=True, capture_output=True)
    assert _metrics_without_time(killed) == _metrics_without_time(tmp_path / "whole")
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    resumed = json.loads((killed / "summary.json").read_text())
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    assert resumed["test_loss"] == whole["test_loss"]


@pytest.mark.skipif(
    not FASHION.exists(), reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)"
)
def test_real_fashion_mnist_subset_trains_well_above_chance(capsys, tmp_path: Path):
    code, _, err = cli(
        capsys,
        "train",
        "--recipe",
        "fashion-mnist",
        "--out",
        tmp_path / "run",
        "--epochs",
        "3",
        "--set",
        "data.subset=8000",
        "--quiet",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.75  # chance is 0.10
    assert "Ankle boot" in json.loads((tmp_path / "run" / "run.json").read_text())["classes"]
