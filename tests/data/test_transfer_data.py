"""Data for transfer experiments: class selection, N images per class, PCA colour noise, test-time crops."""

import pytest
import torch

from convscope.config import AugmentConfig
from convscope.data.augment import PCAColor, build_augment, ten_crops
from convscope.data.modalities.image import prepare_image_data
from convscope.data.split import color_pca
from convscope.errors import UserError

from .helpers import make_imagefolder


def test_classes_are_selected_and_renumbered_and_per_class_caps_training(tmp_path) -> None:
    root = make_imagefolder(tmp_path / "d", ("a", "b", "c"), per_class=6, size=(8, 8), splits=("train", "test"))
    data = prepare_image_data(f"imagefolder:{root}", valid_fraction=0.0, test_fraction=0.1, seed=0,
                              classes=["c", "a"], per_class=4)  # fmt: skip
    assert data.classes == ["c", "a"] and data.info["classes"] == ["c", "a"]
    assert torch.bincount(data.train.labels).tolist() == [4, 4]
    assert torch.bincount(data.test.labels).tolist() == [6, 6]  # the selected classes' whole test split
    full = prepare_image_data(f"imagefolder:{root}", valid_fraction=0.0, test_fraction=0.1, seed=0)
    # Label 0 is now "c": its images are the original class 2's.
    originals = {bytes(img.flatten().tolist()) for img in full.test.images[full.test.labels == 2]}
    assert {bytes(img.flatten().tolist()) for img in data.test.images[data.test.labels == 0]} == originals
    with pytest.raises(UserError, match="has no class 'z'"):
        prepare_image_data(f"imagefolder:{root}", valid_fraction=0.0, test_fraction=0.1, seed=0, classes=["z"])


def test_color_pca_finds_the_direction_colours_vary_in() -> None:
    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (64, 1, 8, 8), generator=g)
    images = grey.expand(64, 3, 8, 8).to(torch.uint8).contiguous()  # all variation along (1, 1, 1)
    values, vectors = color_pca(images)
    assert values[-1] > 100 * values[:2].abs().max()
    torch.testing.assert_close(vectors[:, -1].abs(), torch.full((3,), 3**-0.5), rtol=1e-3, atol=1e-3)


def test_pca_color_shifts_each_image_by_one_colour_along_the_components() -> None:
    values, vectors = torch.tensor([0.0, 0.0, 0.5]), torch.eye(3)
    op = PCAColor(values, vectors, std=0.1)
    x = torch.rand(4, 3, 5, 5)
    alphas = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -2.0], [5.0, 5.0, 0.0], [0.0, 0.0, 0.0]])
    shifted = op.apply(x, alphas) - x
    assert torch.allclose(shifted[0, 2], torch.full((5, 5), 0.5)) and torch.allclose(
        shifted[1, 2], torch.full((5, 5), -1.0)
    )
    assert shifted[:, :2].abs().max() == 0 and shifted[2:].abs().max() == 0  # zero-variance components do nothing
    pipeline = build_augment(AugmentConfig(pca_color=0.1), color_pca=(values, vectors))
    assert "PCAColor" in repr(pipeline) and build_augment(AugmentConfig(pca_color=0.1), train=False) is None


def test_ten_crops_are_five_crops_and_their_mirrors() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float).view(2, 1, 6, 6)
    views = ten_crops(x, (4, 4))
    assert len(views) == 10 and all(v.shape == (2, 1, 4, 4) for v in views)
    assert torch.equal(views[0], x[..., :4, :4]) and torch.equal(views[4], x[..., 1:5, 1:5])
    assert torch.equal(views[9], views[4].flip(-1))
    padded = ten_crops(x, (6, 6), padding=1)
    assert torch.equal(padded[4], x)  # the centre view of the padded image is the image itself
    with pytest.raises(UserError, match="do not fit"):
        ten_crops(x, (8, 8))
