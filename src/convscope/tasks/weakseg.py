"""Weakly supervised segmentation from image labels (seed 000), and the GAP classifier CAM is read from.

The model returns class maps, B x C x h x w logits (``fcn-small``, ``fcn-resnet18`` with ``pooling = "none"``,
any fully convolutional network). Seed 000 aggregates them with the smooth maximum
``(1/r) * log(mean(exp(r * x)))`` (:func:`convscope.models.fcn.smooth_max`) and trains the image logits as C
binary detectors with ``BCEWithLogitsLoss`` against one-hot (class indices) or multi-hot labels. The attention
``sigmoid(logsumexp over classes)`` says where the model found a class; each pixel gets the argmax class where
the attention exceeds a threshold (chosen on the validation scenes after training) and the background elsewhere.

``aggregation = "mean"`` with ``loss = "softmax"`` is instead a global-average-pooling softmax classifier (Zhou
et al. 2016): the same body, its maps are the class activation maps (CAM), and its masks come from CAM and
Grad-CAM (:mod:`convscope.segment.segmentation`), the baselines of ``convscope bench weakseg``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from convscope.engine.task import Task
from convscope.errors import UserError
from convscope.models.fcn import smooth_max

AGGREGATIONS = ("smoothmax", "mean")
LOSSES = ("bce", "softmax")


def class_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, checked to be N x C x h x w class maps."""
    maps = model(x)
    if maps.dim() != 4:
        raise UserError(
            f"the model returns {' x '.join(map(str, maps.shape))} class scores, not a spatial map of class logits "
            "(N x C x H x W) as the weakseg and segment tasks need: use a fully convolutional model such as "
            'fcn-small, or fcn-resnet18 with model.pooling = "none"'
        )
    return maps


def attention(maps: torch.Tensor) -> torch.Tensor:
    """Seed 000's attention: ``sigmoid(logsumexp over classes)``, N x h x w in [0, 1]."""
    return torch.sigmoid(torch.logsumexp(maps.float(), dim=1))


def label_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices (N) as one-hot rows, or multi-hot rows (N x C of 0 and 1) as they are: float N x C."""
    if labels.dim() == 1 and not labels.is_floating_point():
        if labels.numel() and not (int(labels.min()) >= 0 and int(labels.max()) < num_classes):
            raise UserError(f"labels must be class indices in [0, {num_classes}); got {labels.min()}..{labels.max()}")
        return F.one_hot(labels, num_classes).float()
    if labels.dim() != 2 or labels.shape[1] != num_classes:
        raise UserError(f"labels of shape {tuple(labels.shape)} are neither class indices (N) nor one-hot or "
                        f"multi-hot rows (N x {num_classes})")  # fmt: skip
    if not bool(((labels == 0) | (labels == 1)).all()):
        bad = labels[(labels != 0) & (labels != 1)][0].item()
        raise UserError(f"labels must be one-hot or multi-hot (0 or 1 in each of the {num_classes} columns); "
                        f"found the value {bad}")  # fmt: skip
    return labels.float()


class WeakSegTask(Task):
    """A batch is ``(images, labels)`` or ``(images, labels, masks)``; training never reads the masks."""

    name = "weakseg"
    modality = "scene"
    figures = ("hsv-grid",)  # convscope.report.segmentation
    measure = "masks"  # convscope.segment.segmentation.measure_run

    def __init__(self, num_classes: int, r: float = 0.5, aggregation: str = "smoothmax", loss: str = "bce") -> None:
        if aggregation not in AGGREGATIONS or loss not in LOSSES:
            raise UserError(f"task 'weakseg' aggregation = {aggregation!r}, loss = {loss!r}: expected an aggregation "
                            f"in {AGGREGATIONS} and a loss in {LOSSES}")  # fmt: skip
        if not r > 0:
            raise UserError(f"task 'weakseg' option r = {r!r}: expected a number > 0 (seed 000: 0.5)")
        self.num_classes, self.r, self.aggregation, self.loss = num_classes, float(r), aggregation, loss

    @property
    def rule(self) -> str:
        """How pixel masks are made: the attention of seed 000, or class activation maps for the GAP classifier."""
        return "attention" if self.loss == "bce" else "cam"

    def image_logits(self, maps: torch.Tensor) -> torch.Tensor:
        maps = maps.float()
        return smooth_max(maps, self.r) if self.aggregation == "smoothmax" else maps.mean(dim=(2, 3))

    def _losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per image: the mean binary cross-entropy over classes, or softmax cross-entropy against the labels
        spread evenly over the image's classes."""
        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=1)
        return F.cross_entropy(logits, targets / targets.sum(dim=1, keepdim=True).clamp(min=1), reduction="none")

    def correct(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Image-level correctness per image. Class indices: the top class is the label (as classification).
        Multi-hot: the predicted set is the labelled set; BCE predicts the classes with a positive logit, the
        softmax classifier (whose probabilities share one unit) its top-n classes for an image of n."""
        if labels.dim() == 1:
            return logits.argmax(dim=1) == labels
        positive = labels > 0.5
        if self.loss == "bce":
            return ((logits > 0) == positive).all(dim=1)
        rank = logits.argsort(dim=1, descending=True).argsort(dim=1)  # 0 for the top class
        return ((rank < positive.sum(dim=1, keepdim=True)) == positive).all(dim=1)

    def _step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        x, labels = batch[0], batch[1]
        logits = self.image_logits(class_maps(model, x))
        return self._losses(logits, label_targets(labels, self.num_classes)), self.correct(logits, labels)

    def training_step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]):
        losses, correct = self._step(model, batch)
        return losses.mean(), {"accuracy": correct.float().mean()}

    def make_metrics(self, detailed: bool = False) -> MetricCollection:
        return MetricCollection({"loss": MeanMetric(), "accuracy": MeanMetric()}, compute_groups=False)

    def validation_step(self, model: nn.Module, batch, metrics: MetricCollection) -> None:
        losses, correct = self._step(model, batch)
        metrics["loss"].update(losses)
        metrics["accuracy"].update(correct.float())

    def batch_size(self, batch) -> int:
        return batch[0].shape[0]

    @torch.inference_mode()
    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Image-level probabilities: of each class being present (BCE), or the softmax classifier's."""
        logits = self.image_logits(class_maps(model, x))
        return logits.sigmoid() if self.loss == "bce" else logits.softmax(dim=1)
