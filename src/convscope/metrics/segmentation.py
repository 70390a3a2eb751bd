"""Segmentation metrics for a task that predicts a class per pixel (N x H x W class indices).

Two protocols, both reported because published figures differ by which one they use:

- ``per_class_iou``: per image, |prediction ∩ truth| / |prediction ∪ truth| for each class, averaged over the
  images where the class occurs in the prediction or the truth (torchmetrics' ``MeanIoU``);
- ``segmentation_accuracy``: seed 002's SA(c) = N(Y=c, Ŷ=c) / (N(Y=c, Ŷ=c) + N(Y≠c, Ŷ=c) + N(Y=c, Ŷ≠c)),
  pixels counted over the whole data set (the Pascal VOC protocol's IoU; torchmetrics' ``MulticlassJaccardIndex``).

A class that never occurs is ``None`` and left out of the means.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassJaccardIndex
from torchmetrics.segmentation import MeanIoU


def segmentation_metrics(num_classes: int) -> MetricCollection:
    """Fresh metrics for one evaluation pass; ``update(pred, target)`` with N x H x W class indices."""
    return MetricCollection(
        {
            "per_class_iou": MeanIoU(num_classes, per_class=True, input_format="index"),
            "segmentation_accuracy": MulticlassJaccardIndex(num_classes, average=None),
            "pixel_accuracy": MulticlassAccuracy(num_classes, average="micro"),
            "confusion_matrix": MulticlassConfusionMatrix(num_classes),
        },
        compute_groups=False,
    )


def summarize_segmentation(values: dict[str, torch.Tensor], classes: Sequence[str]) -> dict:
    """``segmentation_metrics(...).compute()`` as JSON-ready fields."""
    confusion = values["confusion_matrix"]
    occurs = (confusion.sum(dim=0) + confusion.sum(dim=1)) > 0  # predicted or true somewhere
    iou = values["per_class_iou"]
    iou_defined = occurs & (iou >= 0)  # MeanIoU gives -1 for a class absent from every image
    sa = values["segmentation_accuracy"]

    def per_class(v: torch.Tensor, defined: torch.Tensor) -> dict[str, float | None]:
        return {c: (float(x) if ok else None) for c, x, ok in zip(classes, v.tolist(), defined.tolist(), strict=True)}

    def mean(v: torch.Tensor, defined: torch.Tensor) -> float | None:
        return float(v[defined].mean()) if bool(defined.any()) else None

    return {
        "per_class_iou": per_class(iou, iou_defined),
        "mean_iou": mean(iou, iou_defined),
        "segmentation_accuracy": per_class(sa, occurs),
        "mean_segmentation_accuracy": mean(sa, occurs),
        "pixel_accuracy": float(values["pixel_accuracy"]),
        "pixels": int(confusion.sum()),
    }
