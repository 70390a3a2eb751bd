import math

import pytest
import torch
from torch import nn

from convscope.explain.methods import black_baseline
from convscope.explain.trust import (
    NEEDS_MASKS,
    SANITY_THRESHOLD,
    Measure,
    blurred,
    curve_auc,
    deletion_curves,
    insertion_curves,
    object_masks,
    object_masks_of,
    paired_comparison,
    pointing_game,
    randomized_copy,
    rank_correlation,
    trust_figures,
    verdict,
)
from tests.explain.helpers import ClassMaps, images, tiny_convnet


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
    assert curve_auc(good).item() < curve_auc(bad).item()
    # Several images at once, in chunks that cut across steps: each image keeps its own curve.
    both = deletion_curves(_probabilities, x.repeat(2, 1, 1, 1), target.repeat(2),
                           torch.cat([faithful, 1 - faithful]), baseline, steps=4, batch=3)  # fmt: skip
    torch.testing.assert_close(both, torch.cat([good, bad]))


def test_curve_auc_is_the_trapezoid_over_the_share_removed():
    curves = torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]])
    assert curve_auc(curves).tolist() == pytest.approx([0.5, 1.0])


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
        assert 0 <= row["pointing_game"] <= 1 and row["images"] == 6
        assert 0 <= row["deletion_auc"] <= 1 and 0 <= row["insertion_auc"] <= 1
        assert len(row["deletion_curve"]) == 29 and len(row["insertion_curve"]) == 29
        spearman = row["randomization_spearman"]
        assert -1 <= spearman <= 1
        assert row["sanity_check"] == ("pass" if spearman <= SANITY_THRESHOLD else "fail")
        assert row["verdict"] in ("pass", "fail") and row["reason"]
        assert "per_image" not in row
    assert results["random"]["randomization_spearman"] is None
    assert results["random"]["verdict"] == "reference"  # the chance level is never judged
    assert "gradcam layer: features.3" in results["gradcam"]["notes"][0]


CHECKER = (torch.arange(8).view(-1, 1) + torch.arange(8)).remainder(2).float() * 2 - 1  # +1 / -1, 8 x 8


class OneRegion(nn.Module):
    """A linear model whose class 0 reads only a checkerboard in the top-left 4 x 4 of an 8 x 8 image: the answer
    is known, and a blur (insertion's start) or black (deletion's) erases the pattern. Its weights, not its
    shape, place the region, so re-initialising them moves what the gradient shows."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 2)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()
            region = torch.zeros(8, 8)
            region[:4, :4] = 1.0
            self.linear.weight[0] = 0.5 * (region * CHECKER).flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def _one_region_images(n: int = 12) -> torch.Tensor:
    """Checkerboards of varied contrast: class 0 everywhere, with a probability near 1."""
    return CHECKER * (1 + 0.5 * torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(2)))


def test_a_faithful_saliency_passes_on_a_model_whose_answer_is_known():
    model = OneRegion().eval()
    x = _one_region_images()
    region = torch.zeros(12, 8, 8, dtype=torch.bool)
    region[:, :4, :4] = True
    results = trust_figures(model, ["saliency"], x, lambda b: model(b).softmax(dim=1), region,
                            black_baseline([0.0], [1.0]), batch=5)  # fmt: skip
    saliency, random = results["saliency"], results["random"]
    assert saliency["pointing_game"] == 1.0 and random["pointing_game"] < 0.8
    assert saliency["deletion_auc"] < random["deletion_auc"]
    assert saliency["deletion_vs_random"]["beats_random"]
    assert saliency["randomization_spearman"] <= SANITY_THRESHOLD
    assert saliency["verdict"] == "pass" and "beats random maps on deletion" in saliency["reason"]


def _judged(maps: torch.Tensor, randomised_maps: torch.Tensor) -> dict:
    model = OneRegion().eval()
    x = _one_region_images()
    measure = Measure(lambda b: model(b).softmax(dim=1), x, torch.zeros(12, dtype=torch.long), None,
                      black_baseline([0.0], [1.0]))  # fmt: skip
    noise = torch.rand(12, 8, 8, generator=torch.Generator().manual_seed(0))
    return measure.judge(measure.figures(maps, randomised_maps), measure.figures(noise, None))


def test_random_constant_and_anti_correlated_maps_fail_with_their_reason():
    good = torch.zeros(12, 8, 8)
    good[:, :4, :4] = 1.0
    good += torch.rand(12, 8, 8, generator=torch.Generator().manual_seed(5)) * 0.1  # no ties
    other = torch.rand(12, 8, 8, generator=torch.Generator().manual_seed(6))

    anti = _judged(-good, other)  # the region last: random maps do better on both curves
    assert anti["verdict"] == "fail" and "random maps beat it on deletion and insertion AUC" in anti["reason"]

    noise = _judged(torch.rand(12, 8, 8, generator=torch.Generator().manual_seed(7)), other)
    assert noise["verdict"] == "fail" and "no better than random maps" in noise["reason"]

    constant = _judged(torch.ones(12, 8, 8), other)
    assert constant["verdict"] == "fail" and "randomisation check is undefined" in constant["reason"]

    unchanged = _judged(good, good.clone())  # faithful, but the same whatever the weights
    assert unchanged["deletion_vs_random"]["beats_random"]
    assert (
        unchanged["verdict"] == "fail" and "maps barely change when the weights are randomised" in unchanged["reason"]
    )

    assert _judged(good, other)["verdict"] == "pass"


def test_paired_comparison_needs_a_margin_beyond_the_noise():
    random = torch.tensor([0.5, 0.6, 0.4, 0.5])
    slightly = random + torch.tensor([-0.05, 0.04, -0.03, 0.02])  # lower on average, within the noise
    clearly = random - torch.tensor([0.2, 0.22, 0.18, 0.21])
    assert not paired_comparison(slightly, random, higher_is_better=False)["beats_random"]
    row = paired_comparison(clearly, random, higher_is_better=False)
    assert row["beats_random"] and not row["beaten_by_random"]
    assert row["mean_difference"] == pytest.approx(-0.2025)
    assert paired_comparison(clearly, random, higher_is_better=True)["beaten_by_random"]
    assert not paired_comparison(clearly[:1], random[:1], higher_is_better=False)["beats_random"]  # one image


def test_insertion_puts_the_salient_pixels_back_first():
    x = torch.ones(1, 1, 4, 4)
    target = torch.tensor([0])
    faithful = torch.zeros(1, 4, 4)
    faithful[0, :2, :2] = 1.0
    start = torch.zeros_like(x)
    good = insertion_curves(_probabilities, x, target, faithful, start, steps=4)
    bad = insertion_curves(_probabilities, x, target, 1 - faithful, start, steps=4)
    low, high = _probabilities(start)[0, 0].item(), _probabilities(x)[0, 0].item()  # 0.5 and sigmoid(8)
    torch.testing.assert_close(good, torch.tensor([[low, high, high, high, high]]))
    torch.testing.assert_close(bad, torch.tensor([[low, low, low, low, high]]))
    assert curve_auc(good).item() == pytest.approx(0.25 * (low + high) / 2 + 0.75 * high)
    assert curve_auc(bad).item() == pytest.approx(0.75 * low + 0.25 * (low + high) / 2)


def test_blurred_keeps_flat_images_and_spreads_a_spike():
    flat = torch.full((1, 3, 12, 12), 0.3)
    torch.testing.assert_close(blurred(flat), flat)
    spike = torch.zeros(1, 1, 12, 12)
    spike[0, 0, 6, 6] = 1.0
    out = blurred(spike)
    assert out[0, 0, 6, 6] < 1.0 and out[0, 0, 6, 7] > 0 and out.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_object_masks_only_where_the_data_has_true_ones():
    x = torch.rand(2, 3, 8, 8)
    masks, rule = object_masks_of("imagefolder:/photos", x, [0.0] * 3, [1.0] * 3, None)
    assert masks is None and rule == NEEDS_MASKS and "needs object masks" in rule
    masks, rule = object_masks_of("fashion-mnist", x, [0.0] * 3, [1.0] * 3, None)
    assert masks is not None and masks.dtype == torch.bool and "black background" in rule
    scene = torch.randint(0, 3, (2, 8, 8))
    masks, rule = object_masks_of("fashion-scenes", x, [0.0] * 3, [1.0] * 3, scene)
    assert masks is scene and "true masks" in rule


def test_without_masks_no_pointing_game_and_class_masks_follow_the_explained_class():
    model = OneRegion().eval()
    x = _one_region_images(4)
    probabilities = lambda b: model(b).softmax(dim=1)  # noqa: E731
    results = trust_figures(model, ["saliency"], x, probabilities, None, black_baseline([0.0], [1.0]))
    assert results["saliency"]["pointing_game"] is None and results["random"]["pointing_game"] is None
    scene = torch.zeros(4, 8, 8, dtype=torch.long)
    scene[:2, :4, :4] = 1  # class 0 (the explained one) where saliency points
    scene[2:, :4, :4] = 2  # class 1 there: the explained class is elsewhere
    scene[2:, 4:, 4:] = 1
    results = trust_figures(model, ["saliency"], x, probabilities, scene, black_baseline([0.0], [1.0]))
    assert results["saliency"]["pointing_game"] == 0.5


def test_a_class_map_model_is_explained_through_its_image_scores_and_scored_on_scene_masks():
    model = ClassMaps().eval()  # a weakseg run's shape: class maps, pooled into image scores by its task
    x = images(4)
    scene = torch.zeros(4, 8, 8, dtype=torch.long)
    scene[:, 2:6, 2:6] = torch.arange(1, 5).view(4, 1, 1) % 3 + 1
    pool = lambda maps: maps.amax(dim=(2, 3))  # noqa: E731
    results = trust_figures(model, ["saliency", "gradcam", "attention"], x, lambda b: pool(model(b)).sigmoid(),
                            scene, black_baseline([0.0], [1.0]), image_logits=pool)  # fmt: skip
    for name in ("saliency", "gradcam", "attention"):  # every method applies, attention on the maps themselves
        assert results[name]["applies"] and 0 <= results[name]["pointing_game"] <= 1
        assert results[name]["verdict"] in ("pass", "fail")


def test_a_method_random_maps_do_better_on_one_auc_fails_even_if_it_wins_the_other():
    def row(mean: float, beats: bool) -> dict:
        return {"mean_difference": mean, "standard_error": 0.01, "beats_random": beats, "beaten_by_random": False}

    wins_insertion = {"randomization_spearman": 0.1, "insertion_vs_random": row(+0.10, True)}
    label, reason = verdict({**wins_insertion, "deletion_vs_random": row(+0.006, False)})  # random deletes better
    assert label == "fail" and "random maps do better on deletion AUC" in reason
    label, reason = verdict({**wins_insertion, "deletion_vs_random": row(-0.004, False)})
    assert label == "pass" and reason.startswith("beats random maps on insertion AUC")


def test_a_difference_too_small_to_matter_never_beats_random():
    random = torch.full((30,), 0.5)
    tiny = random - 2e-5 + torch.linspace(-1e-7, 1e-7, 30)  # far beyond 2 standard errors, and meaningless
    assert not paired_comparison(tiny, random, higher_is_better=False)["beats_random"]
