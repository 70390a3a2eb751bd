"""Transfer learning end to end: seed 004's histopathology recipe on a generated folder in its layout, `init`
from a run and from bad files, test-time augmentation, and the model listing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.cli_helpers import cli, one_error_line
from tests.data.helpers import make_csv_folder

# Small and quick: 2 epochs of which 1 frozen, a narrow transfer head, batches of 8.
QUICK = ["--epochs", "2", "--batch-size", "8", "--precision", "fp32", "--quiet", "--set", "transfer.freeze_epochs=1",
         "--set", "model.hidden=16", "--set", "data.eval_batch_size=16"]  # fmt: skip


@pytest.fixture(scope="module")
def histo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Kaggle layout: train/<id>.tif and train_labels.csv, 56x56 patches (the recipe crops 49x49)."""
    return make_csv_folder(tmp_path_factory.mktemp("histo"), labels=["0", "1"] * 16, size=(56, 56))


def test_histopathology_recipe_freezes_then_fine_tunes_and_evaluates_with_tta(capsys, histo: Path, tmp_path: Path):
    first = tmp_path / "first"
    code, out, err = cli(capsys, "train", "--recipe", "seed004-histopathology", "--data", f"csv:{histo}",
                         "--out", first, *QUICK)  # fmt: skip
    assert code == 0, err
    assert "phase 1/2 (frozen): 1 epochs, lr 0.01, backbone frozen" in out and "phase 2/2 (fine-tune)" in out
    summary = json.loads((first / "summary.json").read_text())
    assert [(p["name"], p["epochs"], p["lr"]) for p in summary["phases"]] == [
        ("frozen", 1, 0.01), ("fine-tune", 1, pytest.approx(0.001))]  # fmt: skip
    assert summary["epochs"] == 2
    assert (first / "phase1" / "metrics.csv").is_file() and (first / "checkpoints" / "best.pt").is_file()

    # A second run starts from the first: same classes, so its head is taken too.
    second = tmp_path / "second"
    code, out, err = cli(capsys, "train", "--recipe", "seed004-histopathology", "--data", f"csv:{histo}",
                         "--out", second, *QUICK, "--set", f"transfer.init={first}")  # fmt: skip
    assert code == 0, err
    loaded = next(line for line in out.splitlines() if line.startswith("init: loaded"))
    assert f"from {first}" in loaded and "left at" not in out

    code, out, err = cli(capsys, "evaluate", second)
    assert code == 0, err
    plain = json.loads((second / "eval.json").read_text())
    # Two classes: ROC and precision-recall with their areas, and the confusion matrix (issue 7's evaluation).
    assert plain["roc"]["kind"] == "binary" and plain["roc"]["binary_auc"] is not None
    assert plain["precision_recall"]["curves"] and len(plain["confusion_matrix"]) == 2
    assert "tta" not in plain
    code, out, err = cli(capsys, "evaluate", second, "--tta")
    assert code == 0, err
    tta = json.loads((second / "eval.json").read_text())
    assert tta["tta"] == {"views": 10, "crop": [49, 49], "padding": 0}
    assert tta["images"] == plain["images"] and tta["loss"] != plain["loss"]


def test_tta_on_small_images_pads_and_crops_at_full_size(capsys, tmp_path: Path):
    from convscope import api

    data = make_csv_folder(tmp_path / "small", labels=["0", "1", "2"] * 6, size=(16, 16))
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--data", f"csv:{data}", "--out", run, "--model", "fastnet-small",
                       "--epochs", "1", "--quiet", "--batch-size", "8")  # fmt: skip
    assert code == 0, err
    result = api.evaluate(run, tta=True)
    assert result["tta"] == {"views": 10, "crop": [16, 16], "padding": 2}
    assert result["roc"]["kind"] == "one-vs-rest"


def test_bad_init_is_one_error_line(capsys, histo: Path, tmp_path: Path):
    not_state = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_state)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(7, 7)}, other)
    cases = [(tmp_path / "nowhere.pth", "does not exist"), (not_state, "not a state dict"),
             (other, "none of its 1 tensors fits")]  # fmt: skip
    for path, fragment in cases:
        code, _, err = cli(capsys, "train", "--recipe", "seed004-histopathology", "--data", f"csv:{histo}",
                           "--out", tmp_path / "run", *QUICK, "--set", f"transfer.init={path}")  # fmt: skip
        assert code == 2
        line = one_error_line(err)
        assert path.name in line and fragment in line, line


def test_models_lists_parameter_counts_and_layer_shapes(capsys):
    code, out, _ = cli(capsys, "models")
    assert code == 0 and "resnet18" in out and "11,181,642" in out and "monster" in out
    code, out, _ = cli(capsys, "models", "fcn-resnet18", "--input-size", "3,32,32")
    assert code == 0 and "[2, 10, 8, 8]" in out  # the pixelwise classifier's maps, before upsampling and pooling
    code, _, err = cli(capsys, "models", "--input-size", "32")
    assert code == 2 and "C,H,W" in one_error_line(err)
