"""Lab colour and the split-brain targets: the batched conversion against skimage on real photographs,
quantisation, and targets on the encoder's grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import color, data

from convscope.data.lab import (
    ab_bin_centres,
    l_bin_centres,
    lab_to_rgb,
    quantise_ab,
    quantise_l,
    rgb_to_lab,
    scale_lab,
    splitbrain_targets,
    unscale_lab,
)


def photo(name: str) -> np.ndarray:
    return getattr(data, name)()[::2, ::2]  # half size: the same colours, a quarter of the work


def test_rgb_to_lab_matches_skimage_on_real_photographs():
    images = [photo(name) for name in ("chelsea", "coffee")]
    batch = torch.from_numpy(np.stack([im[:150, :150] for im in images])).permute(0, 3, 1, 2).float() / 255
    lab = rgb_to_lab(batch).permute(0, 2, 3, 1).numpy()
    for ours, image in zip(lab, images, strict=True):
        reference = color.rgb2lab(image[:150, :150])
        assert np.abs(ours - reference).max() < 1e-3
        assert reference[..., 1:].std() > 5  # the photographs are colourful: a and b are really compared


def test_lab_to_rgb_inverts_the_conversion_and_scaling_round_trips():
    rgb = torch.from_numpy(photo("astronaut")).permute(2, 0, 1)[None].float() / 255
    lab = rgb_to_lab(rgb)
    assert torch.allclose(lab_to_rgb(lab), rgb, atol=1e-4)
    scaled = scale_lab(lab)
    assert scaled.abs().max() <= 1.0 and torch.allclose(unscale_lab(scaled), lab, atol=1e-4)


def test_quantisation_bins_edges_and_centres():
    assert quantise_l(torch.tensor([0.0, 0.99, 1.0, 50.5, 100.0, 140.0]), 100).tolist() == [0, 0, 1, 50, 99, 99]
    assert torch.equal(quantise_l(l_bin_centres(100), 100), torch.arange(100))
    # The joint class is a_bin * bins + b_bin (seed 001); neutral grey sits in the middle bin of both.
    ab = torch.tensor([[-110.0, 109.9], [0.0, 0.0], [-500.0, 500.0]]).T.reshape(1, 2, 3, 1)
    assert quantise_ab(ab, 25).flatten().tolist() == [24, 12 * 25 + 12, 24]
    centres = ab_bin_centres(25).T.reshape(1, 2, 625, 1)
    assert torch.equal(quantise_ab(centres, 25).flatten(), torch.arange(625))


def test_targets_are_the_quantised_cells_of_the_downsampled_image():
    generator = torch.Generator().manual_seed(0)
    cells = torch.rand(2, 3, 8, 8, generator=generator)
    image = cells.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # 32 x 32, uniform 4 x 4 cells
    ab_targets, l_targets = splitbrain_targets(rgb_to_lab(image), (8, 8), l_bins=100, ab_bins=25)
    cell_lab = rgb_to_lab(cells)
    assert ab_targets.shape == l_targets.shape == (2, 8, 8)
    assert torch.equal(l_targets, quantise_l(cell_lab[:, 0], 100))
    assert torch.equal(ab_targets, quantise_ab(cell_lab[:, 1:], 25))
    assert len(ab_targets.unique()) > 20  # many colours, so a wrong cell order would show


@pytest.mark.parametrize("grid", [(12, 12), (4, 4)])
def test_targets_follow_the_grid(grid):
    lab = rgb_to_lab(torch.rand(3, 3, 96, 96))
    ab_targets, l_targets = splitbrain_targets(lab, grid, l_bins=10, ab_bins=5)
    assert ab_targets.shape == l_targets.shape == (3, *grid)
    assert ab_targets.max() < 25 and l_targets.max() < 10 and ab_targets.dtype == torch.int64
