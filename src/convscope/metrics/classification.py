"""A classification run's detailed metrics (``ClassifyTask.make_metrics(detailed=True)``) as ``eval.json`` fields.

Seed 002's definitions: error rate P(f(X) != Y); balanced error rate (1/C) sum_y P(f(X) != y | Y = y); per class
the true-positive rate P(f(X) = c | Y = c) and false-positive rate P(f(X) = c | Y != c); ROC curves one class
against the rest (the binary curve when there are two classes). A class with no test image has no rates and
no areas (``null``) and is left out of the averages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

CURVE_POINTS = 256  # per class in eval.json and the plots; the areas are computed from every score


def summarize(values: dict[str, object], classes: Sequence[str]) -> dict:
    """The JSON-ready fields computed from the detailed metrics' ``compute()`` (tensors on the CPU)."""
    confusion = values["confusion_matrix"]
    support = confusion.sum(dim=1)
    negatives = support.sum() - support
    present = support > 0
    tpr = values["true_positive_rate"]
    fpr = 1.0 - values["specificity"]
    auc, ap = values["roc_auc"], values["average_precision"]
    fpr_curves, tpr_curves, _ = values["roc"]
    precision_curves, recall_curves, _ = values["pr_curve"]

    def per_class(v: torch.Tensor, defined: torch.Tensor) -> dict[str, float | None]:
        return {c: (float(x) if ok else None) for c, x, ok in zip(classes, v.tolist(), defined.tolist(), strict=True)}

    def mean_over(v: torch.Tensor, defined: torch.Tensor) -> float | None:
        return float(v[defined].mean()) if bool(defined.any()) else None

    curves = {
        c: {"fpr": _thin(f), "tpr": _thin(t)}
        for c, f, t, ok in zip(classes, fpr_curves, tpr_curves, present.tolist(), strict=True)
        if ok
    }
    pr_curves = {
        c: {"recall": _thin(r), "precision": _thin(p)}
        for c, p, r, ok in zip(classes, precision_curves, recall_curves, present.tolist(), strict=True)
        if ok
    }
    roc: dict = {"kind": "binary" if len(classes) == 2 else "one-vs-rest", "auc": per_class(auc, present)}
    if len(classes) == 2:
        # The binary ROC is the positive class's one-vs-rest curve; its area is the binary AUC.
        roc["positive_class"] = classes[1]
        roc["binary_auc"] = roc["auc"][classes[1]]
    roc["auc_macro"] = mean_over(auc, present)
    roc["curves"] = curves
    balanced = mean_over(1.0 - tpr, present)
    return {
        "balanced_error_rate": balanced,
        "true_positive_rate": per_class(tpr, present),
        "false_positive_rate": per_class(fpr, negatives > 0),
        "roc": roc,
        "precision_recall": {
            "average_precision": per_class(ap, present),
            "mean_average_precision": mean_over(ap, present),
            "curves": pr_curves,
        },
    }


def _thin(curve: torch.Tensor, points: int = CURVE_POINTS) -> list[float]:
    """At most ``points`` evenly spaced samples of a curve, its ends kept."""
    if len(curve) > points:
        curve = curve[torch.linspace(0, len(curve) - 1, points).round().long()]
    return [round(float(v), 5) for v in curve]


def accuracy_interval(accuracy: float, count: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's score interval (95% for ``z`` 1.96) of an accuracy measured on ``count`` examples: unlike the
    normal approximation it stays inside [0, 1] and is honest at 0% and 100% on a few images."""
    if count <= 0:
        return (0.0, 1.0)
    centre = (accuracy + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(accuracy * (1 - accuracy) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))
