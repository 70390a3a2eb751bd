"""Data a classifier cannot learn from, or labels that contradict themselves, are explained in the user's words."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convscope import api
from convscope.config import Recipe
from convscope.data.modalities.image import prepare_image_data
from convscope.data.sources.csv_folder import scan_csv_folder
from convscope.errors import UserError
from tests.cli_helpers import cli, one_error_line
from tests.data.helpers import make_csv_folder, make_imagefolder


def test_one_class_folder_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    root = make_imagefolder(tmp_path / "one", classes=("cat",), per_class=10)
    code, _, err = cli(capsys, "train", "--recipe", "classify", "--data", f"imagefolder:{root}",
                       "--batch-size", "4", "--epochs", "1", "--out", tmp_path / "run")  # fmt: skip
    assert code == 2
    line = one_error_line(_errors_only(err))
    assert "has 1 class ('cat')" in line and "needs 2 or more classes" in line and str(root) in line


def _errors_only(err: str) -> str:
    """stderr without its ``note:`` lines (a small folder gets notes about its batch)."""
    return "\n".join(line for line in err.splitlines() if not line.startswith("note: "))


def test_weakseg_still_trains_on_one_class():
    recipe = Recipe()
    recipe.task.name = "weakseg"
    task = api.build_task(recipe, {"classes": ["cat"], "dataset": "imagefolder:x"})
    assert task.num_classes == 1


def test_conflicting_labels_of_one_id_name_the_csv_the_id_both_labels_and_lines(tmp_path: Path):
    root = make_csv_folder(tmp_path / "csv")
    csv = root / "train_labels.csv"
    csv.write_text(csv.read_text() + "0000abcd,1\n")  # line 2 labels it 0
    with pytest.raises(UserError) as caught:
        scan_csv_folder(root)
    message = str(caught.value)
    assert str(csv) in message and "'0000abcd'" in message
    assert "line 8" in message and "line 2" in message and "'1'" in message and "'0'" in message


def test_an_id_listed_twice_with_its_label_is_used_once_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture):
    root = make_csv_folder(tmp_path / "csv")
    csv = root / "train_labels.csv"
    csv.write_text(csv.read_text() + "0001abcd,1\n")
    plan = scan_csv_folder(root)
    assert len(plan.items["train"]) == 6
    err = capsys.readouterr().err
    assert err.startswith("note: ") and "id '0001abcd' on lines 3 and 8" in err and "used once" in err


def test_a_split_that_rounds_to_no_image_says_so_with_the_counts(tmp_path: Path):
    root = make_imagefolder(tmp_path / "ten", classes=("cat", "dog"), per_class=5)
    with pytest.raises(UserError) as caught:
        prepare_image_data(f"imagefolder:{root}", valid_fraction=0.0, test_fraction=0.1, seed=0)
    message = str(caught.value)
    assert "data.test_fraction = 0.1 of its 10 images" in message and "is 0" not in message
    assert "set data.test_fraction to 0.2 or more" in message
    # What it says to set works.
    data = prepare_image_data(f"imagefolder:{root}", valid_fraction=0.0, test_fraction=0.2, seed=0)
    assert len(data.test) == 2


def _red_only_folder(root: Path, flat: bool = False) -> Path:
    """Two classes of images whose green and blue are 0 everywhere (and, ``flat``, whose red is one value)."""
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for index in range(6):
            pixels = np.zeros((8, 8, 3), dtype=np.uint8)
            pixels[..., 0] = 80 if flat else rng.integers(0, 256, (8, 8))
            (root / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / label / f"{index}.png")
    return root


def test_constant_channels_are_left_unscaled_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture):
    root = _red_only_folder(tmp_path / "red")
    data = prepare_image_data(f"imagefolder:{root}", valid_fraction=0.0, test_fraction=0.2, seed=0)
    assert data.std[0] > 0 and data.std[1:] == [1.0, 1.0] and data.mean[1:] == [0.0, 0.0]
    err = capsys.readouterr().err
    assert "every training image has the same value in channel 2 (green) = 0, channel 3 (blue) = 0" in err


def test_images_of_one_flat_colour_are_an_error(tmp_path: Path):
    root = _red_only_folder(tmp_path / "flat", flat=True)
    with pytest.raises(UserError, match=r"channel 1 \(red\) = 80.*no information"):
        prepare_image_data(f"imagefolder:{root}", valid_fraction=0.0, test_fraction=0.2, seed=0)
