"""The dense-CRF refinement: it pulls a blurry foreground to the item's outline, and is kept only where it helps."""

import torch

from convscope.segment.refine import choose_refinement, crf_grid, refined_masks
from convscope.segment.segmentation import mean_iou


def _scene(size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A bright 10 x 10 item on black, its true mask (class 0 -> mask 1), and a blob of scores centred on it that
    spills well past its outline, as a coarse weakly supervised map does."""
    image = torch.zeros(1, 1, size, size, dtype=torch.uint8)
    image[0, 0, 11:21, 11:21] = 200
    truth = (image[:, 0] > 0).long()
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    blob = 10 - ((yy - 15.5) ** 2 + (xx - 15.5) ** 2).sqrt()  # > 0 within 10 pixels of the centre
    return image, truth, blob[None]


def _iou(masks: torch.Tensor, truth: torch.Tensor) -> float:
    return float(((masks > 0) & (truth > 0)).sum() / ((masks > 0) | (truth > 0)).sum())


def test_crf_pulls_a_blurry_blob_to_the_bright_items_outline():
    image, truth, scores = _scene()
    classes = torch.zeros_like(truth, dtype=torch.uint8)
    raw = torch.where(scores > 0, classes.long() + 1, 0)
    refined = refined_masks(classes, scores, 0.0, image, {"temperature": 2.0, "sxy": 10, "srgb": 5})
    assert _iou(raw, truth) < 0.4  # the blob's disc is three times the item
    assert _iou(refined, truth) > 0.9
    assert refined.max() == 1  # item pixels keep the rule's class (0 -> mask value 1)


def test_refinement_is_chosen_on_validation_masks_and_dropped_when_it_does_not_help():
    image, truth, scores = _scene()
    classes = torch.zeros_like(truth, dtype=torch.uint8)
    score_of = lambda masks, t: mean_iou(masks, t, 2)  # noqa: E731
    crf, best, sweep = choose_refinement(classes, scores, 0.0, image, truth, score_of)
    assert crf in crf_grid(float(scores.std())) and best > 0.9
    assert sweep[0]["crf"] is None and sweep[0]["valid_mean_iou"] < best - 0.2 and len(sweep) == 1 + len(crf_grid(1.0))
    exact = truth.float() * 2 - 1  # scores already exactly the item: nothing to gain
    crf, best, _ = choose_refinement(classes, exact, 0.0, image, truth, score_of)
    assert crf is None and best == 1.0


def test_crf_grid_temperatures_follow_the_scores_spread():
    small, large = crf_grid(0.1), crf_grid(10.0)
    assert len(small) == len(large) and large[0]["temperature"] == 100 * small[0]["temperature"]
