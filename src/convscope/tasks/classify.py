"""Image classification: softmax cross-entropy over class logits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassAveragePrecision,
    MulticlassConfusionMatrix,
    MulticlassPrecisionRecallCurve,
    MulticlassRecall,
    MulticlassROC,
    MulticlassSpecificity,
)

from convscope.engine.task import Task
from convscope.errors import UserError

TTA_MODES = ("none", "flip", "flip-shift")


class ClassifyTask(Task):
    """A batch is ``(images, labels)``; the model returns class logits.

    ``tta = "flip"`` (airbench's test-time augmentation) makes every prediction, validation, test, ``evaluate``
    and ``predict`` alike, the mean of the class probabilities of the image and its mirror image: twice the
    inference cost for up to 0.3 points on Fashion-MNIST and 0.55 on CIFAR-10. Training is unchanged. Only for
    data whose mirror image is a valid sample of its class (a network trained with ``augment.hflip``: without it,
    flips cost Fashion-MNIST 0.4-0.5 points). ``tta = "flip-shift"`` is airbench's six views: the image and its
    mirror (weight 1/4 each), and both of them shifted by one pixel up-left and down-right (1/8 each; the edge
    reflected), for networks trained with ``augment.crop_padding``; six times the inference cost.
    """

    name = "classify"
    modality = "image"
    # A softmax over one class is always right: nothing to learn, and accuracy and AUC are undefined.
    min_classes = 2

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, topk: int = 5, tta: str = "none") -> None:
        if tta not in TTA_MODES:
            raise UserError(f"task.tta = {tta!r} is not one of: {', '.join(TTA_MODES)}")
        if tta != "none" and self.modality == "text":  # images and Lab images mirror; a reversed name does not
            raise UserError(f"task.tta = {tta!r} mirrors images; task {self.name!r} takes {self.modality} inputs")
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.tta = tta
        # Top-k is only informative when k < number of classes.
        self.topk = topk if 1 < topk < num_classes else 0

    def training_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        logits = model(x)
        # The loss in fp32 even under bf16 autocast: log-softmax of bf16 logits loses precision.
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        accuracy = (logits.argmax(dim=1) == y).float().mean()
        return loss, {"accuracy": accuracy}

    def make_metrics(self, detailed: bool = False) -> MetricCollection:
        """Validation metrics (scalars); ``detailed`` adds per-class accuracy, true-positive rate (recall) and
        specificity (1 - false-positive rate), one-vs-rest ROC and precision-recall curves with their areas
        (exact: every score is kept), and the confusion matrix. :func:`convscope.metrics.classification.summarize`
        turns them into ``eval.json``."""
        metrics: dict = {
            "loss": MeanMetric(),
            "accuracy": MulticlassAccuracy(self.num_classes, average="micro"),
        }
        if self.topk:
            metrics[f"top{self.topk}_accuracy"] = MulticlassAccuracy(self.num_classes, top_k=self.topk, average="micro")
        if detailed:
            metrics["per_class_accuracy"] = MulticlassAccuracy(self.num_classes, average=None)
            metrics["confusion_matrix"] = MulticlassConfusionMatrix(self.num_classes)
            metrics["true_positive_rate"] = MulticlassRecall(self.num_classes, average=None)
            metrics["specificity"] = MulticlassSpecificity(self.num_classes, average=None)
            metrics["roc"] = MulticlassROC(self.num_classes)
            metrics["roc_auc"] = MulticlassAUROC(self.num_classes, average=None)
            metrics["pr_curve"] = MulticlassPrecisionRecallCurve(self.num_classes)
            metrics["average_precision"] = MulticlassAveragePrecision(self.num_classes, average=None)
        return MetricCollection(metrics, compute_groups=False)

    def log_probs(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Log class probabilities (fp32): of the image, or with ``tta`` the log of the views' weighted mean
        probability."""
        views, weights = self._views(x)
        weighted = [model(v).float().log_softmax(dim=1) + math.log(w) for v, w in zip(views, weights, strict=True)]
        return torch.stack(weighted).logsumexp(dim=0)

    def _views(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[float]]:
        """The test-time views of a batch and their weights (summing to 1)."""
        if self.tta == "none":
            return [x], [1.0]
        views, weights = [x, x.flip(-1)], [0.5, 0.5]
        if self.tta == "flip-shift":
            h, w = x.shape[-2:]
            padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
            shifted = [padded[..., :h, :w], padded[..., 2:, 2:]]
            views += [view for s in shifted for view in (s, s.flip(-1))]
            weights = [0.25, 0.25] + [0.125] * 4
        return views, weights

    def validation_step(self, model: nn.Module, batch, metrics: MetricCollection) -> None:
        x, y = batch
        log_probs = self.log_probs(model, x)
        loss = F.nll_loss(log_probs, y, reduction="none")  # the cross-entropy of the (averaged) prediction
        # Probabilities, not logits: torchmetrics' curves apply softmax only when a batch's scores fall outside
        # [0, 1], so small logits would be taken for probabilities. Argmax-based metrics see the same classes.
        probs = log_probs.exp()
        for key, metric in metrics.items():
            if key == "loss":
                metric.update(loss)
            else:
                metric.update(probs, y)

    def batch_size(self, batch) -> int:
        return batch[1].shape[0]

    @torch.inference_mode()
    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities."""
        return self.log_probs(model, x).exp()
