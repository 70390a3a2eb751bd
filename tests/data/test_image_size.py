"""The image size as a setting: data.image_size, data.resize, the default rule, the split sizes of small folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convscope.config import load_recipe, requested_size
from convscope.data.images import MAX_DEFAULT_SIDE, default_size, fit_size, load_images
from convscope.data.modalities.image import ImageModality, fraction_by_size, prepare_image_data
from convscope.errors import UserError

from .helpers import make_image, make_imagefolder


def wide_image() -> torch.Tensor:
    """A 3 x 20 x 40 image: white left half, black right half."""
    image = torch.zeros(3, 20, 40, dtype=torch.uint8)
    image[:, :, :20] = 255
    return image


def test_crop_covers_and_cuts_the_sides():
    out = fit_size(wide_image(), (10, 10), "crop")
    assert out.shape == (3, 10, 10)
    assert out[:, :, 0].float().mean() > 200 and out[:, :, -1].float().mean() < 50  # the centre: half and half


def test_squash_keeps_everything_and_changes_the_aspect():
    out = fit_size(wide_image(), (10, 10), "squash")
    assert out.shape == (3, 10, 10)
    assert out[:, :, :4].float().mean() > 200 and out[:, :, 6:].float().mean() < 50


def test_pad_keeps_everything_and_fills_with_black():
    out = fit_size(wide_image(), (10, 10), "pad")
    assert out.shape == (3, 10, 10)
    assert out[:, :2].float().max() == 0 and out[:, -2:].float().max() == 0  # bands above and below
    assert out[:, 4, :4].float().mean() > 200


@pytest.mark.parametrize("mode", ["crop", "squash", "pad"])
def test_batches_resize_like_single_images(mode):
    batch = torch.stack([wide_image(), 255 - wide_image()])
    assert torch.equal(fit_size(batch, (8, 12), mode)[1], fit_size(255 - wide_image(), (8, 12), mode))


def test_the_default_size_is_the_most_common_one_with_its_longer_side_capped():
    assert default_size([(96, 96), (128, 128), (96, 96)]) == (96, 96)
    assert default_size([(3000, 4000)] * 2 + [(10, 10)]) == (192, MAX_DEFAULT_SIDE)


def test_a_folder_of_large_photographs_is_decoded_at_the_capped_size(tmp_path: Path):
    paths = [make_image(tmp_path / f"{i}.jpg", seed=i, size=(300, 600)) for i in range(2)]
    assert load_images(paths).images.shape[-2:] == (128, 256)


@pytest.mark.parametrize(("value", "expected"), [(0, None), (64, (64, 64)), ([48, 64], (48, 64))])
def test_requested_size_forms(value, expected):
    assert requested_size(value) == expected


@pytest.mark.parametrize("value", [-1, [0, 3], [1, 2, 3], 100000, "64"])
def test_bad_sizes_are_refused_naming_the_key(value):
    with pytest.raises(UserError, match=r"data.image_size"):
        requested_size(value)


def test_image_size_and_resize_are_recipe_keys(tmp_path: Path):
    folder = make_imagefolder(tmp_path / "d", ("a", "b"), per_class=6, size=(12, 20))
    recipe = load_recipe(None, {"data.name": f"imagefolder:{folder}", "data.image_size": "16", "data.resize": "pad"})
    data = ImageModality().prepare(recipe)
    assert data.info["image_size"] == [16, 16]
    assert ImageModality().model_inputs(recipe, data.info)["image_size"] == (16, 16)
    with pytest.raises(UserError, match=r"data.resize = 'stretch'"):
        load_recipe(None, {"data.resize": "stretch"})


def test_tensor_sources_are_resized_in_memory(tmp_path: Path):
    folder = make_imagefolder(tmp_path / "d", ("a", "b"), per_class=6, size=(8, 8))
    native = prepare_image_data(f"imagefolder:{folder}", valid_fraction=0, test_fraction=0.5, seed=0)
    larger = prepare_image_data(f"imagefolder:{folder}", valid_fraction=0, test_fraction=0.5, seed=0,
                                image_size=(16, 24), resize="squash")  # fmt: skip
    assert native.info["image_size"] == [8, 8] and larger.info["image_size"] == [16, 24]
    assert larger.info["sizes"] == native.info["sizes"]


def test_small_folders_get_held_out_splits_that_can_measure_something():
    assert fraction_by_size(0.1, 150, 30) == 0.2  # 30 test images rather than 15
    assert fraction_by_size(0.1, 1000, 30) == 0.1  # nothing changes from 300 images up
    assert fraction_by_size(0.0, 150, 30) == 0.0  # no split stays no split
    assert fraction_by_size(0.1, 150, 0) == 0.1  # set explicitly: kept


def test_an_explicit_fraction_is_kept_on_a_small_folder(tmp_path: Path):
    folder = make_imagefolder(tmp_path / "d", ("a", "b"), per_class=20, size=(8, 8))
    default = ImageModality().prepare(load_recipe(None, {"data.name": f"imagefolder:{folder}"}))
    explicit = ImageModality().prepare(
        load_recipe(None, {"data.name": f"imagefolder:{folder}", "data.test_fraction": "0.1"})
    )
    assert default.info["sizes"]["test"] == 8 and explicit.info["sizes"]["test"] == 4
