import math

import pytest
import torch
from torch import nn

from convscope.explain.methods import black_baseline
from convscope.explain.trust import (
    SANITY_THRESHOLD,
    deletion_auc,
    deletion_curves,
    object_masks,
    pointing_game,
    randomized_copy,
    rank_correlation,
    trust_figures,
)
from tests.explain.helpers import images, tiny_convnet


def test_object_masks_keep_bright_pixels():
    image = torch.zeros(1, 3, 2, 2)
    image[0, 1, 0, 1] = 0.5  # bright in one channel is enough
    image[0, :, 1, 1] = 0.05
    assert object_masks(image, threshold=0.1).tolist() == [[[False, True], [False, False]]]


def test_pointing_game_hits_misses_and_constant_maps():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, 1:3, 1:3] = True
    maps = torch.zeros(3, 4, 4)
    maps[0, 2, 2] = 1.0  # inside
    maps[1, 0, 3] = 1.0  # outside
    # maps[2] is constant: its argmax is the first pixel, which lies in its mask, yet it points nowhere.
    masks[2, 0, 0] = True
    assert pointing_game(maps, masks).tolist() == [True, False, False]


class Brightness(nn.Module):
    """Class 0's logit is the mean of the top-left quadrant; class 1's is 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x[:, :, :2, :2].mean(dim=(1, 2, 3)) * 8
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def _probabilities(x: torch.Tensor) -> torch.Tensor:
    return Brightness()(x).softmax(dim=1)


def test_deletion_ranks_a_faithful_map_below_an_unfaithful_one():
    x = torch.ones(1, 1, 4, 4)
    target = torch.tensor([0])
    faithful = torch.zeros(1, 4, 4)
    faithful[0, :2, :2] = 1.0  # the pixels the score reads
    baseline = torch.zeros(1, 1, 1, 1)
    good = deletion_curves(_probabilities, x, target, faithful, baseline, steps=4)
    bad = deletion_curves(_probabilities, x, target, 1 - faithful, baseline, steps=4)
    # Starts at p(x), ends at p(baseline image) whatever the order.
    start, end = _probabilities(x)[0, 0].item(), _probabilities(torch.zeros_like(x))[0, 0].item()
    assert good[0, 0].item() == pytest.approx(start) and bad[0, 0].item() == pytest.approx(start)
    assert good[0, -1].item() == pytest.approx(end) and bad[0, -1].item() == pytest.approx(end)
    assert good[0, 1].item() == pytest.approx(end)  # the first quarter removed is the whole quadrant
    assert deletion_auc(good).item() < deletion_auc(bad).item()
    # Several images at once, in chunks that cut across steps: each image keeps its own curve.
    both = deletion_curves(_probabilities, x.repeat(2, 1, 1, 1), target.repeat(2),
                           torch.cat([faithful, 1 - faithful]), baseline, steps=4, batch=3)  # fmt: skip
    torch.testing.assert_close(both, torch.cat([good, bad]))


def test_deletion_auc_is_the_trapezoid_over_the_share_removed():
    curves = torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]])
    assert deletion_auc(curves).tolist() == pytest.approx([0.5, 1.0])


def test_randomized_copy_reinitialises_without_touching_the_original_or_the_rng():
    model = tiny_convnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    copy_a, copy_b = randomized_copy(model, seed=3), randomized_copy(model, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert not torch.equal(copy_a.features[0].weight, model.features[0].weight)
    assert torch.equal(copy_a.features[0].weight, copy_b.features[0].weight)  # the seed decides
    assert torch.equal(copy_a.features[4].running_var, torch.ones(6))  # statistics reset too


def test_rank_correlation():
    a = torch.arange(16.0).view(1, 4, 4)
    assert rank_correlation(a, a * 3 + 1).item() == pytest.approx(1.0)
    assert rank_correlation(a, -a).item() == pytest.approx(-1.0)
    assert rank_correlation(a, a**3).item() == pytest.approx(1.0)  # ranks, not values
    assert math.isnan(rank_correlation(a, torch.zeros(1, 4, 4)).item())


def test_trust_figures_report_every_method_and_the_chance_level():
    model = tiny_convnet()
    x = images(6)
    masks = torch.zeros(6, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    results = trust_figures(
        model,
        ["saliency", "gradcam", "attention"],
        x,
        lambda batch: model(batch).softmax(dim=1),
        masks,
        black_baseline([0.0], [1.0]),
        batch=4,
    )
    assert set(results) == {"saliency", "gradcam", "attention", "random"}
    assert results["attention"]["applies"] is False and "does not apply" in results["attention"]["reason"]
    for name in ("saliency", "gradcam"):
        row = results[name]
        assert 0 <= row["pointing_game"] <= 1 and 0 <= row["deletion_auc"] <= 1 and row["images"] == 6
        assert len(row["deletion_curve"]) == 29
        spearman = row["randomization_spearman"]
        assert -1 <= spearman <= 1
        assert row["sanity_check"] == ("pass" if spearman <= SANITY_THRESHOLD else "fail")
    assert results["random"]["randomization_spearman"] is None
    assert "gradcam layer: features.3" in results["gradcam"]["notes"][0]
