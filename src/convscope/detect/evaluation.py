"""The detection fields of ``eval.json`` and their figures (``convscope evaluate`` on a detect run)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from convscope.metrics.detection import summarize
from convscope.report.plots import plot_confusion_matrix, plot_precision_recall
from convscope.run import LoadedRun
from convscope.serve.inference import InferenceConfig


def detection_evaluation(
    run: LoadedRun, values: dict[str, Any], data: str, images: int, config: InferenceConfig
) -> dict[str, Any]:
    """``eval.json`` of a detect run from the detailed metrics' ``values``: mAP@0.5, mAP@[.5:.95], mAP@0.75,
    per-class AP, precision-recall per class at IoU 0.5 and the confusion matrix with a background class."""
    fields = summarize(values, run.classes)
    confusion: torch.Tensor = values["confusion_matrix"]
    return {
        "run": str(run.run_dir),
        "data": data,
        "images": images,
        "boxes": int(confusion[: len(run.classes)].sum()),  # the true boxes: every row but the background's
        "inference": dataclasses.asdict(config),
        "loss": values["loss"].item(),
        **fields,
    }


def plot_detection(result: dict[str, Any], plots: Path) -> None:
    """``confusion_matrix.png`` (background included) and ``precision_recall.png`` (per class, IoU 0.5)."""
    matrix = result["confusion_matrix"]
    plot_confusion_matrix(torch.tensor(matrix["counts"]), matrix["labels"], plots / "confusion_matrix.png")
    curves = result["precision_recall"]["curves"]
    ap50 = {name: result["per_class_ap"][name]["ap50"] for name in curves}
    pr = {"curves": curves, "average_precision": ap50, "mean_average_precision": result["map50"]}
    plot_precision_recall(pr, plots / "precision_recall.png")
