"""Detection metrics: COCO mAP through torchmetrics (faster_coco_eval), a confusion matrix with a background row
and column, and :func:`summarize` for ``eval.json``.

Predictions and targets are torchmetrics' format: per image a dict with ``boxes`` (K x 4, xyxy pixels),
``labels`` (int64 K) and, for predictions, ``scores`` (K).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou

BACKGROUND = "background"
# The confusion matrix counts detections a user would see: scores from 0.25 (Ultralytics' default confidence),
# matched to a true box at IoU 0.5 or more (the PASCAL VOC criterion, seed 002's IoU >= 1/2).
CONFUSION_SCORE = 0.25
CONFUSION_IOU = 0.5


class MeanAP(MeanAveragePrecision):
    """torchmetrics' COCO mAP with convscope's names: ``map50_95`` (mAP@[.5:.95]) and ``map50`` (mAP@0.5).

    Validation (``detailed = False``) gets these two scalars only; ``detailed`` adds ``map75``, the per-class
    APs and the precision tensor (IoU x recall x class x area x max detections) that :func:`summarize` reads.
    """

    def __init__(self, detailed: bool = False) -> None:
        super().__init__(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval",
                         class_metrics=detailed, extended_summary=detailed)  # fmt: skip
        self.detailed = detailed

    def compute(self) -> dict[str, torch.Tensor]:
        values = super().compute()
        out = {"map50_95": values["map"], "map50": values["map_50"]}
        if self.detailed:
            out.update(map75=values["map_75"], map_per_class=values["map_per_class"], classes=values["classes"],
                       precision=values["precision"])  # fmt: skip
        return out


class DetectionConfusion(Metric):
    """(C + 1) x (C + 1) counts, rows the truth and columns the prediction, the last of each the background:
    a detection (score >= ``score``) matched to no true box is a background row entry, a true box that no
    detection matched a background column entry. Matching is greedy by score, class-agnostic, at IoU >= ``iou``
    (so a well placed box of the wrong class shows as a confusion between the two classes)."""

    full_state_update = False

    def __init__(self, num_classes: int, score: float = CONFUSION_SCORE, iou: float = CONFUSION_IOU) -> None:
        super().__init__()
        self.num_classes, self.score, self.iou = num_classes, score, iou
        self.add_state("matrix", torch.zeros(num_classes + 1, num_classes + 1, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: list[dict[str, torch.Tensor]], target: list[dict[str, torch.Tensor]]) -> None:
        background = self.num_classes
        for pred, true in zip(preds, target, strict=True):
            keep = pred["scores"] >= self.score
            order = pred["scores"][keep].argsort(descending=True)
            boxes, labels = pred["boxes"][keep][order], pred["labels"][keep][order]
            matched = torch.zeros(len(true["labels"]), dtype=torch.bool, device=boxes.device)
            overlaps = box_iou(boxes.float(), true["boxes"].float())
            for k in range(len(labels)):
                free = overlaps[k].masked_fill(matched, -1.0)
                best = int(free.argmax()) if free.numel() else -1
                if best >= 0 and free[best] >= self.iou:
                    matched[best] = True
                    self.matrix[true["labels"][best], labels[k]] += 1
                else:
                    self.matrix[background, labels[k]] += 1
            for label in true["labels"][~matched]:
                self.matrix[label, background] += 1

    def compute(self) -> torch.Tensor:
        return self.matrix


def _class_ap50(precision: torch.Tensor, k: int) -> float | None:
    """AP at IoU 0.5 of the k-th evaluated class: the mean of its 101-point interpolated precision (all areas,
    the most detections), None when the class has no true box."""
    curve = precision[0, :, k, 0, -1]
    return float(curve.mean()) if bool((curve > -1).all()) else None


def summarize(values: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """``eval.json``'s detection fields from the detailed metrics' ``compute()`` (tensors on the CPU): mAP@0.5,
    mAP@[.5:.95], mAP@0.75, per-class AP, per-class precision-recall at IoU 0.5, and the confusion matrix."""
    precision = values["precision"]
    evaluated = [int(c) for c in values["classes"].flatten().tolist()]
    per_class_map = values["map_per_class"].flatten().tolist()
    per_class: dict[str, dict[str, float | None]] = {c: {"ap50_95": None, "ap50": None} for c in classes}
    curves: dict[str, dict[str, list[float]]] = {}
    recall_points = torch.linspace(0, 1, precision.shape[1]).tolist()
    for k, c in enumerate(evaluated):
        if not 0 <= c < len(classes):
            continue
        name = classes[c]
        ap50 = _class_ap50(precision, k)
        per_class[name] = {"ap50_95": per_class_map[k] if per_class_map[k] >= 0 else None, "ap50": ap50}
        if ap50 is not None:
            curves[name] = {
                "recall": recall_points,
                "precision": [round(p, 4) for p in precision[0, :, k, 0, -1].tolist()],
            }
    confusion = values["confusion_matrix"]
    return {
        "map50": float(values["map50"]),
        "map50_95": float(values["map50_95"]),
        "map75": float(values["map75"]),
        "per_class_ap": per_class,
        "precision_recall": {"iou": 0.5, "curves": curves},
        "confusion_matrix": {
            "labels": [*classes, BACKGROUND],
            "rows": "true",
            "columns": "predicted",
            "score_threshold": CONFUSION_SCORE,
            "iou": CONFUSION_IOU,
            "counts": confusion.tolist(),
        },
    }
