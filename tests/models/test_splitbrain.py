"""Seed 001's split-brain networks: output grids for 96 x 96 and 32 x 32 images, and the classifier on top."""

from __future__ import annotations

import pytest
import torch

from convscope.data.lab import scale_lab
from convscope.errors import UserError
from convscope.models import create_model
from convscope.models.splitbrain import ENCODERS, SplitBrain, simple_encoder


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize(("size", "grid"), [(96, 12), (32, 8)])
def test_each_encoder_predicts_every_class_on_the_grid(encoder: str, size: int, grid: int):
    model = SplitBrain((size, size), encoder=encoder, l_bins=100, ab_bins=25).eval()
    with torch.no_grad():
        ab, lightness = model(torch.randn(2, 3, size, size))
    assert model.grid == (grid, grid)
    assert ab.shape == (2, 625, grid, grid) and lightness.shape == (2, 100, grid, grid)


def test_simple_encoder_at_96_is_the_seeds_simple_ae():
    # The seed's SimpleAE(in_channels=1, out_channels=625): its layer shapes, hence its parameter count.
    seed_params = (1 * 12 * 16 + 12) + 24 + (12 * 24 * 16 + 24) + 48 + (24 * 48 * 25 + 48) + 96
    seed_params += (48 * 96 * 25 + 96) + 192 + (96 * 625 * 25 + 625)
    assert sum(p.numel() for p in simple_encoder(1, 625, (96, 96)).parameters()) == seed_params


def test_each_half_sees_only_its_channels():
    model = SplitBrain((32, 32), encoder="resnet", widths=(4, 8, 8)).eval()
    x = torch.randn(1, 3, 32, 32)
    other_ab = x.clone()
    other_ab[:, 1:] = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        (ab1, l1), (ab2, l2) = model(x), model(other_ab)
    assert torch.equal(ab1, ab2) and not torch.allclose(l1, l2)  # ab from L alone; L from ab


@pytest.mark.parametrize("classifier", ["mlp", "shallow"])
def test_classifier_sits_on_both_halves_concatenated(classifier: str):
    options = {"encoder": "resnet", "widths": [4, 8, 8], "classifier": classifier, "l_bins": 10, "ab_bins": 5}
    inputs = {"in_channels": 3, "image_size": (32, 32)}
    model = create_model("splitbrain-classifier", num_classes=10, inputs=inputs, hidden=16, **options)
    features = model.features(scale_lab(torch.rand(2, 3, 32, 32) * 100))
    assert features.shape == (2, 25 + 10, 8, 8)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.head[2].in_features == 35 * 64


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="encoder = 'vgg'"):
        SplitBrain((32, 32), encoder="vgg")
    with pytest.raises(UserError, match="divisible by 4"):
        SplitBrain((30, 30))
    with pytest.raises(UserError, match="3 channels"):
        create_model("splitbrain", num_classes=10, inputs={"in_channels": 1, "image_size": (32, 32)})
