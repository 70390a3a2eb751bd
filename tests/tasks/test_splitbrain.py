"""The split-brain task: its batched loss against seed 001's per-sample loop, and class rebalancing."""

from __future__ import annotations

import torch
from torch import nn

from convscope.data.lab import rgb_to_lab, scale_lab
from convscope.tasks.splitbrain import SplitBrainTask, rebalancing_weights, targets_for


class FixedOutputs(nn.Module):
    """Returns given (ab, L) logits whatever the input."""

    def __init__(self, ab: torch.Tensor, lightness: torch.Tensor) -> None:
        super().__init__()
        self.ab, self.lightness = ab, lightness

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ab, self.lightness


def seed_loss(ch2_hat, ch1_hat, ch2_labels, ch1_labels, batch_size, downsample_size, num_classes_ch2, num_classes_ch1):
    """Seed 001's pre-training loss, as written there: a Python loop over the images of the batch."""
    criterion_ch2, criterion_ch1 = nn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    ch2_labels_unbind = torch.unbind(ch2_labels.view(batch_size, downsample_size**2))
    ch1_labels_unbind = torch.unbind(ch1_labels.view(batch_size, downsample_size**2))
    ch2_hat_4loss = ch2_hat.permute(0, 2, 3, 1).contiguous().view(batch_size, downsample_size**2, num_classes_ch2**2)
    ch2_hat_unbind = torch.unbind(ch2_hat_4loss)
    ch1_hat_4loss = ch1_hat.permute(0, 2, 3, 1).contiguous().view(batch_size, downsample_size**2, num_classes_ch1)
    ch1_hat_unbind = torch.unbind(ch1_hat_4loss)
    loss_ch2 = 0.0
    loss_ch1 = 0.0
    for idx in range(len(ch1_hat_unbind)):
        loss_ch2 += criterion_ch2(ch2_hat_unbind[idx], ch2_labels_unbind[idx])
        loss_ch1 += criterion_ch1(ch1_hat_unbind[idx], ch1_labels_unbind[idx])
    return loss_ch1 + loss_ch2


def test_batched_loss_is_the_seeds_per_sample_loop_per_image():
    generator = torch.Generator().manual_seed(0)
    n, grid = 6, 12
    x = scale_lab(rgb_to_lab(torch.rand(n, 3, 96, 96, generator=generator)))
    ab = torch.randn(n, 625, grid, grid, generator=generator) * 3
    lightness = torch.randn(n, 100, grid, grid, generator=generator) * 3
    model = FixedOutputs(ab, lightness)
    loss, logged = SplitBrainTask(num_classes=10).training_step(model, (x, torch.zeros(n, dtype=torch.long)))
    ab_targets, l_targets = targets_for(x, ab, lightness)
    expected = seed_loss(ab, lightness, ab_targets, l_targets, n, grid, 25, 100)
    # The seed sums each image's mean over the batch; the task averages over the images instead.
    assert torch.allclose(loss * n, expected, rtol=1e-5)
    assert torch.allclose(logged["ab_loss"] + logged["l_loss"], loss)
    assert 0 <= logged["ab_accuracy"] <= 1 and logged["accuracy"] == (logged["ab_accuracy"] + logged["l_accuracy"]) / 2


def test_rebalancing_weights_favour_rare_colours_and_average_one_under_the_prior():
    targets = torch.tensor([0] * 90 + [1] * 9 + [2])
    weights = rebalancing_weights(targets, classes=4, mix=0.5)
    prior = torch.tensor([0.9, 0.09, 0.01, 0.0])
    assert torch.isclose((prior * weights).sum(), torch.tensor(1.0))
    assert weights[0] < weights[1] < weights[2] < weights[3]
    assert torch.allclose(rebalancing_weights(targets, classes=4, mix=1.0), torch.ones(4))  # all uniform: no effect


def test_rebalanced_loss_weighs_the_colours_by_the_prior_of_the_training_images():
    class Data:
        train = type("Train", (), {"images": (torch.rand(20, 3, 32, 32) * 255).to(torch.uint8)})()

    task = SplitBrainTask(num_classes=10, rebalance=0.5)
    task.observe_training_data(Data())
    x = scale_lab(rgb_to_lab(Data.train.images[:4].float() / 255))
    model = FixedOutputs(torch.zeros(4, 625, 8, 8), torch.zeros(4, 100, 8, 8))
    _, logged = task.training_step(model, (x, None))
    # Uniform logits: each cell's cross-entropy is log(625); the weights average to 1 over the prior's images.
    plain = SplitBrainTask(num_classes=10).training_step(model, (x, None))[1]
    assert torch.isclose(plain["ab_loss"], torch.log(torch.tensor(625.0)))
    assert not torch.isclose(logged["ab_loss"], plain["ab_loss"])
