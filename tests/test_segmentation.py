"""From class maps to masks: the rules, threshold selection on validation data, and the metrics."""

import pytest
import torch

from convscope.segment.segmentation import PixelScores, RankedMaps, choose, measure_masks
from convscope.tasks.weakseg import WeakSegTask
from tests.tasks.test_weakseg import FixedMaps

NAMES = ["background", "a", "b"]


def test_attention_rule_is_the_argmax_class_above_the_threshold():
    scores = PixelScores(torch.tensor([[[0, 1], [1, 0]]]), torch.tensor([[[0.9, 0.6], [0.2, 0.5]]]))
    assert scores.masks(0.5)[0].tolist() == [[[1, 2], [0, 0]]]
    assert scores.masks(0.1)[0].tolist() == [[[1, 2], [2, 1]]]
    masks, saturation = scores.masks(logit_threshold=0.55)  # the attention's scores are logits
    assert masks.tolist() == [[[1, 2], [0, 0]]] and saturation[0, 0, 0] == pytest.approx(torch.tensor(0.9).sigmoid())


def test_cam_rule_keeps_probable_classes_and_their_strongest_map():
    maps = torch.tensor([[[[1.0, 0.2]], [[0.6, 0.8]]]])  # 1 image, 2 ranked classes, 1 x 2 pixels
    ranked = RankedMaps(torch.tensor([[1, 0]]), torch.tensor([[0.7, 0.3]]), maps)
    assert ranked.masks(class_threshold=0.1, threshold=0.5)[0].tolist() == [[[2, 1]]]
    assert ranked.masks(class_threshold=0.5, threshold=0.5)[0].tolist() == [[[2, 0]]]  # class 0 too improbable


def test_threshold_is_chosen_by_mean_iou_on_validation_masks():
    truth = torch.tensor([[[1, 1, 0, 0]]])
    scores = PixelScores(torch.zeros(1, 1, 4, dtype=torch.long), torch.tensor([[[0.9, 0.7, 0.4, 0.1]]]))
    grid = [{"threshold": t} for t in (0.05, 0.3, 0.5, 0.8)]
    params, iou, sweep = choose(scores, truth, grid, 3)
    assert params == {"threshold": 0.5} and iou == pytest.approx(1.0)
    assert [row["threshold"] for row in sweep] == [0.05, 0.3, 0.5, 0.8]  # every setting tried, with its IoU
    assert sweep[2]["valid_mean_iou"] == iou and sweep[0]["valid_mean_iou"] < iou


def test_threshold_sweep_plot_draws_one_line_per_class_threshold(tmp_path):
    from convscope.report.segmentation import plot_threshold_sweep

    sweep = [{"class_threshold": c, "threshold": t, "valid_mean_iou": c + t} for c in (0.1, 0.2) for t in (0.3, 0.5)]
    path = tmp_path / "sweep.png"
    plot_threshold_sweep("cam", sweep, {"class_threshold": 0.2, "threshold": 0.5}, path)
    assert path.stat().st_size > 1000
    with pytest.raises(StopIteration):  # the chosen setting must be one of the sweep's
        plot_threshold_sweep("cam", sweep, {"class_threshold": 0.9, "threshold": 0.5}, tmp_path / "bad.png")


def test_measured_masks_match_hand_computed_iou_sa_and_pixel_accuracy():
    truth = torch.tensor([[[0, 0], [1, 1]], [[0, 0], [0, 0]]])
    pred = torch.tensor([[[0, 1], [1, 1]], [[0, 0], [0, 1]]])
    result = measure_masks(pred, truth, NAMES)
    assert result["per_class_iou"]["background"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert result["per_class_iou"]["a"] == pytest.approx((2 / 3 + 0) / 2)
    assert result["segmentation_accuracy"]["a"] == pytest.approx(2 / (2 + 2 + 0))
    assert result["pixel_accuracy"] == pytest.approx(6 / 8) and result["per_class_iou"]["b"] is None


def test_weak_rule_reads_the_model_maps():
    from convscope.segment.segmentation import attention_scores

    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 1, 0, 0] = 5.0
    scores = attention_scores(WeakSegTask(2), FixedMaps(maps), torch.zeros(1, 1, 4, 4))  # upsampled to the image
    assert scores.classes.shape == (1, 4, 4) and int(scores.classes[0, 0, 0]) == 1
    expected = float(torch.logsumexp(torch.tensor([0.0, 5.0]), 0))  # the attention's logit
    assert float(scores.scores[0, 0, 0]) == pytest.approx(expected, abs=1e-2)


def test_weak_rule_gives_pixels_only_to_the_classes_the_image_level_detector_finds():
    from convscope.segment.segmentation import attention_scores

    maps = torch.full((1, 3, 4, 4), -6.0)
    maps[0, 0, :2] = 4.0  # class 0 strong on half the image: found (smooth-max logit > 0)
    maps[0, 1, 3, 3] = 5.0  # class 1 wins one pixel, but its image logit stays negative: not found
    maps[0, 2, 3, 3] = 1.0  # class 2 too is not found: the pixel goes to the best found class
    task = WeakSegTask(3)
    assert task.image_logits(maps)[0].gt(0).tolist() == [True, False, False]
    scores = attention_scores(task, FixedMaps(maps), torch.zeros(1, 1, 4, 4))
    assert scores.classes.unique().tolist() == [0]
    none_found = attention_scores(task, FixedMaps(torch.full((1, 3, 2, 2), -3.0) + torch.arange(3.0)[:, None, None]),
                                  torch.zeros(1, 1, 2, 2))  # fmt: skip
    assert none_found.classes.unique().tolist() == [2]  # then the top class alone


def test_supervised_rule_limits_item_pixels_to_classes_the_image_level_prediction_finds():
    from convscope.segment.segmentation import argmax_scores
    from convscope.tasks.segment import SegmentTask

    maps = torch.full((1, 3, 2, 2), -5.0)  # channel 0 the background, then classes a and b
    maps[0, 0] = 0.0
    maps[0, 1, 0, 0], maps[0, 1, 1, 1] = 5.0, 2.0  # a: sure at one pixel
    maps[0, 2, 1, 1] = 3.0  # b: wins one pixel, image-level probability softmax(0, 2, 3)[2] = 0.71
    ranked = argmax_scores(SegmentTask(2), FixedMaps(maps), torch.zeros(1, 1, 2, 2))
    assert ranked.masks(class_threshold=0.0, threshold=0.5)[0].tolist() == [[[1, 0], [0, 2]]]  # the plain argmax
    assert ranked.masks(class_threshold=0.8, threshold=0.5)[0].tolist() == [[[1, 0], [0, 1]]]  # b not found: a


def test_cam_rule_always_keeps_the_images_top_class():
    ranked = RankedMaps(torch.tensor([[1, 0]]), torch.tensor([[0.4, 0.3]]), torch.tensor([[[[0.9]], [[0.2]]]]))
    assert ranked.masks(class_threshold=0.5, threshold=0.5)[0].tolist() == [[[2]]]
