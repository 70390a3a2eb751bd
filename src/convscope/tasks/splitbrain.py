"""Seed 001's split-brain autoencoder as tasks on Lab images (the ``lab`` modality).

``splitbrain`` pre-trains without labels: the ``splitbrain`` model's half on L predicts the joint ab class of
each grid cell, its half on ab the L class; the loss is the sum of the two per-cell cross-entropies, computed
on the whole batch at once. Per image it is the seed's value: the seed summed the per-image means over the
batch in a Python loop, so its loss is this one times the batch size (``tests/tasks/test_splitbrain.py``).
With ``rebalance`` (Zhang et al.'s lambda, 0.5 in their colourisation) rare colours weigh more.

``splitbrain-finetune`` is image classification on the same Lab input (the ``splitbrain-classifier`` model);
its ``transfer.init`` must be a split-brain run.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from convscope.data.lab import rgb_to_lab, scale_lab, splitbrain_targets, unscale_lab
from convscope.engine.task import Task
from convscope.errors import UserError
from convscope.tasks.classify import ClassifyTask

PRETRAIN_MODELS = ("splitbrain",)  # what a split-brain run trains: splitbrain-finetune's init must be one
PRIOR_IMAGES = 5000  # training images whose colours estimate the class prior for rebalancing
_LOGGED = ("ab_loss", "l_loss", "ab_accuracy", "l_accuracy", "accuracy")


def targets_for(lab_scaled: torch.Tensor, ab_logits: torch.Tensor, l_logits: torch.Tensor):
    """The classes the outputs predict: bins read off the outputs' channels, grid off their size."""
    ab_bins = math.isqrt(ab_logits.shape[1])
    return splitbrain_targets(unscale_lab(lab_scaled), tuple(ab_logits.shape[-2:]), l_logits.shape[1], ab_bins)


def rebalancing_weights(ab_targets: torch.Tensor, classes: int, mix: float) -> torch.Tensor:
    """Zhang et al.'s class weights: the inverse of the empirical prior mixed with a uniform one by ``mix``,
    scaled so that their expectation under the prior is 1. (They also blur the prior; on 625 classes of a
    coarse grid the uniform mix alone keeps weights finite.)"""
    prior = torch.bincount(ab_targets.flatten(), minlength=classes).double()
    prior /= prior.sum()
    weights = 1 / ((1 - mix) * prior + mix / classes)
    return (weights / (prior * weights).sum()).float()


class SplitBrainTask(Task):
    """A batch is ``(scaled Lab images, labels)``; the labels are ignored. The model returns (ab, L) logits."""

    name = "splitbrain"
    modality = "lab"
    figures = ("colours",)  # convscope.report.plots.ColourFigure

    def __init__(self, num_classes: int, rebalance: float = 0.0) -> None:
        if not 0 <= rebalance <= 1:
            raise UserError(f"task option rebalance = {rebalance!r}: expected a number in [0, 1] (0: off)")
        self.rebalance = rebalance
        self._prior_images: torch.Tensor | None = None
        self._weights: torch.Tensor | None = None

    def observe_training_data(self, data: Any) -> None:
        """Keep a fixed sample of training images to estimate the colour prior (only when rebalancing)."""
        if self.rebalance:
            images = data.train.images
            index = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:PRIOR_IMAGES]
            self._prior_images = images[index.sort().values]

    def _class_weights(self, ab_logits: torch.Tensor, l_logits: torch.Tensor) -> torch.Tensor | None:
        if not self.rebalance:
            return None
        if self._weights is None:
            if self._prior_images is None:
                raise RuntimeError("rebalancing needs observe_training_data() first")
            sample = scale_lab(rgb_to_lab(self._prior_images.float() / 255))
            ab_targets, _ = targets_for(sample, ab_logits, l_logits)
            self._weights = rebalancing_weights(ab_targets, ab_logits.shape[1], self.rebalance)
        return self._weights.to(ab_logits.device)

    def losses(self, model: nn.Module, x: torch.Tensor, *, weighted: bool) -> dict[str, torch.Tensor]:
        ab_logits, l_logits = model(x)
        ab_logits, l_logits = ab_logits.float(), l_logits.float()  # log-softmax in fp32 under bf16 autocast
        ab_targets, l_targets = targets_for(x, ab_logits, l_logits)
        weights = self._class_weights(ab_logits, l_logits) if weighted else None
        ab_loss = F.cross_entropy(ab_logits, ab_targets, reduction="none")
        if weights is not None:
            ab_loss = ab_loss * weights[ab_targets]
        ab_accuracy = (ab_logits.argmax(1) == ab_targets).float().mean()
        l_accuracy = (l_logits.argmax(1) == l_targets).float().mean()
        ab_loss, l_loss = ab_loss.mean(), F.cross_entropy(l_logits, l_targets)
        return {
            "loss": ab_loss + l_loss,
            "ab_loss": ab_loss,
            "l_loss": l_loss,
            "ab_accuracy": ab_accuracy,
            "l_accuracy": l_accuracy,
            "accuracy": (ab_accuracy + l_accuracy) / 2,  # both halves' share of cells in the right bin
        }

    def training_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        values = self.losses(model, batch[0], weighted=True)
        return values.pop("loss"), values

    def make_metrics(self, detailed: bool = False) -> MetricCollection:
        return MetricCollection({name: MeanMetric() for name in ("loss", *_LOGGED)}, compute_groups=False)

    def validation_step(self, model: nn.Module, batch, metrics: MetricCollection) -> None:
        values = self.losses(model, batch[0], weighted=False)  # unweighted: comparable across settings
        for name, metric in metrics.items():
            metric.update(values[name], weight=batch[0].shape[0])

    def batch_size(self, batch) -> int:
        return batch[0].shape[0]

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise UserError("a split-brain run predicts colours, not classes: fine-tune it (task splitbrain-finetune)")


class SplitBrainClassifyTask(ClassifyTask):
    """Classification on Lab images (the ``splitbrain-classifier`` model); ``transfer.init``: a split-brain run."""

    name = "splitbrain-finetune"
    modality = "lab"
    init_from = PRETRAIN_MODELS
