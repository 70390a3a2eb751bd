"""Seed 000's weak segmentation task: smooth-max, the loss on one-hot and multi-hot labels, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convscope.errors import UserError
from convscope.models.fcn import smooth_max
from convscope.tasks.segment import SegmentTask
from convscope.tasks.weakseg import WeakSegTask, attention, label_targets


class FixedMaps(nn.Module):
    """Returns the same class maps whatever the input."""

    def __init__(self, maps: torch.Tensor) -> None:
        super().__init__()
        self.maps = maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps


MAPS = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(0))


def test_smooth_max_is_seed_000s_formula_between_mean_and_max():
    torch.testing.assert_close(smooth_max(MAPS, 0.5), 2 * torch.log(torch.exp(0.5 * MAPS).mean(dim=(2, 3))))
    mean, top = MAPS.mean(dim=(2, 3)), MAPS.amax(dim=(2, 3))
    assert bool((smooth_max(MAPS, 0.5) >= mean).all()) and bool((smooth_max(MAPS, 0.5) <= top).all())
    torch.testing.assert_close(smooth_max(MAPS, 0.01), mean, atol=0.02, rtol=0)  # r -> 0: the mean
    # r -> inf: the max, less log(positions) / r.
    torch.testing.assert_close(smooth_max(MAPS, 200.0), top, atol=math.log(30) / 200 + 1e-4, rtol=0)
    assert float(smooth_max(torch.full((1, 1, 4, 4), 1e4), 0.5)) == pytest.approx(1e4)  # no overflow
    with pytest.raises(UserError, match="r = 0"):
        smooth_max(MAPS, 0)


def test_attention_is_sigmoid_of_logsumexp_over_classes():
    torch.testing.assert_close(attention(MAPS), torch.sigmoid(torch.log(torch.exp(MAPS).sum(dim=1))))


def test_loss_is_bce_of_the_smooth_max_logits_against_multi_hot_labels():
    task = WeakSegTask(4, r=0.5)
    labels = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 0]], dtype=torch.float)
    loss, logged = task.training_step(FixedMaps(MAPS), (torch.zeros(3, 1, 5, 6), labels))
    logits = 2 * torch.log(torch.exp(0.5 * MAPS).mean(dim=(2, 3)))
    torch.testing.assert_close(loss, nn.BCEWithLogitsLoss()(logits, labels))
    expected = ((logits > 0) == (labels > 0)).all(dim=1).float().mean()
    assert float(logged["accuracy"]) == pytest.approx(float(expected))


def test_class_indices_are_one_hot_labels():
    task = WeakSegTask(4)
    indices = torch.tensor([2, 0, 3])
    by_index, _ = task.training_step(FixedMaps(MAPS), (torch.zeros(3, 1, 5, 6), indices))
    one_hot, _ = task.training_step(FixedMaps(MAPS), (torch.zeros(3, 1, 5, 6), F.one_hot(indices, 4).float()))
    torch.testing.assert_close(by_index, one_hot)
    logits = task.image_logits(MAPS)
    assert torch.equal(task.correct(logits, indices), logits.argmax(dim=1) == indices)


def test_softmax_classifier_is_scored_on_its_top_n_classes():
    task = WeakSegTask(4, aggregation="mean", loss="softmax")
    logits = torch.tensor([[3.0, 2.0, -1.0, 0.0], [3.0, 2.0, -1.0, 0.0]])
    labels = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.float)
    assert task.correct(logits, labels).tolist() == [True, False]
    loss, _ = task.training_step(FixedMaps(MAPS[:2]), (torch.zeros(2, 1, 5, 6), labels))
    torch.testing.assert_close(loss, F.cross_entropy(MAPS[:2].mean(dim=(2, 3)), labels / 2))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([[1.0, 0.5, 0, 0]]), "found the value 0.5"),
        (torch.tensor([[1.0, 0, 0]]), "neither class indices"),
        (torch.tensor([4]), r"class indices in \[0, 4\)"),
    ],
)
def test_labels_that_are_not_one_hot_or_multi_hot_are_refused(labels, message):
    with pytest.raises(UserError, match=message):
        label_targets(labels, 4)


def test_a_model_without_spatial_maps_is_refused():
    scores = FixedMaps(torch.zeros(3, 4))
    with pytest.raises(UserError, match="not a spatial map of class logits"):
        WeakSegTask(4).training_step(scores, (torch.zeros(3, 1, 5, 6), torch.tensor([0, 1, 2])))


def test_supervised_task_is_pixel_cross_entropy_over_background_and_classes():
    task = SegmentTask(3)
    assert task.num_outputs == 4
    masks = torch.randint(0, 4, (3, 10, 12))
    loss, logged = task.training_step(FixedMaps(MAPS), (torch.zeros(3, 1, 10, 12), torch.zeros(3, 3), masks))
    up = F.interpolate(MAPS, size=(10, 12), mode="bilinear")
    torch.testing.assert_close(loss, F.cross_entropy(up, masks))
    assert float(logged["pixel_accuracy"]) == pytest.approx(float((up.argmax(dim=1) == masks).float().mean()))
    with pytest.raises(UserError, match="pixel masks"):
        task.training_step(FixedMaps(MAPS), (torch.zeros(3, 1, 10, 12), torch.tensor([0, 1, 2])))
