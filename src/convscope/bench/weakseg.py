"""The weak segmentation study (``convscope bench weakseg``): how close does seed 000's weakly supervised model,
trained on image labels only, come to the true FashionScenes masks, beside CAM, Grad-CAM and a model trained
with the masks?

Three runs of shipped recipes on the same body (``fcn-small``) and the same scenes: ``fashion-scenes-weakseg``
(smooth-max + BCE; attention masks), ``fashion-scenes-cam`` (global average pooling + softmax; its CAM and
Grad-CAM masks) and ``fashion-scenes-supervised`` (per-pixel cross-entropy with the masks; argmax). Every
threshold is chosen on the validation scenes; the figures are on the 2,000 test scenes, whose items come from
Fashion-MNIST's test split only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from convscope.bench.runs import timed_run, write_result
from convscope.config import load_recipe
from convscope.run import read_json

RECIPES = {"weak": "fashion-scenes-weakseg", "cam": "fashion-scenes-cam", "supervised": "fashion-scenes-supervised"}
# model -> (run, mask rule)
MODELS = {"weak": ("weak", "attention"), "cam": ("cam", "cam"), "gradcam": ("cam", "gradcam"),
          "supervised": ("supervised", "argmax")}  # fmt: skip
RATIO_GOAL = 0.85
MARGIN_GOAL = 0.05
MAX_TRAIN_SECONDS = 600.0
GOAL = (f"weak_miou >= {RATIO_GOAL} x supervised_miou and >= cam_miou + {MARGIN_GOAL} on the FashionScenes test "
        f"scenes; each model trained in <= {MAX_TRAIN_SECONDS:.0f} s on 2 CPU cores")  # fmt: skip


def _train(recipe_name: str, overrides: dict[str, str], out: Path) -> dict:
    """One run of the study (a finished one kept: its wall time and load are then None) and its mask figures."""
    load = os.getloadavg()[0]
    summary, wall = timed_run(recipe_name, overrides, out)
    kept = wall is None
    return {"summary": summary, "wall_seconds": None if kept else round(wall, 1),
            "load_average_start": None if kept else round(load, 2),
            "load_average_end": None if kept else round(os.getloadavg()[0], 2),
            "segmentation": read_json(out / "segmentation.json", keys=("rules",))["rules"]}  # fmt: skip


def run_weakseg_study(*, out: Path | None, overrides: dict[str, str] | None, results_dir: Path, machine: dict,
                      run_dir: Path | None = None) -> dict:  # fmt: skip
    """Train the three runs under ``run_dir`` (default ``runs/bench-weakseg-<time>/``; finished runs in an existing
    one are kept, an interrupted one resumed), print the table, write the JSON."""
    overrides = overrides or {}
    root = run_dir or Path("runs") / f"bench-weakseg-{time.strftime('%Y%m%d-%H%M%S')}"
    runs = {name: _train(recipe, overrides, root / name) for name, recipe in RECIPES.items()}
    models = {}
    for model, (run, rule) in MODELS.items():
        raw = runs[run]["segmentation"][rule]
        figures = raw.get("crf") or raw  # the CRF-refined masks where the valid scenes chose a CRF
        summary = runs[run]["summary"]
        models[model] = {
            "run": run,
            "mask_rule": rule,
            "params": raw["params"],
            "crf": figures["params"] if raw.get("crf") else None,
            "mean_iou": figures["mean_iou"],
            "raw_mean_iou": raw["mean_iou"],
            "per_class_iou": figures["per_class_iou"],
            "raw_per_class_iou": raw["per_class_iou"],
            "segmentation_accuracy": figures["segmentation_accuracy"],
            "mean_segmentation_accuracy": figures["mean_segmentation_accuracy"],
            "pixel_accuracy": figures["pixel_accuracy"],
            "valid_mean_iou": figures["valid_mean_iou"],
            "image_accuracy": summary["test_accuracy"],
            "train_seconds": summary["train_seconds"],
            "mask_seconds": raw["seconds"],
            **({"layer": figures["layer"]} if "layer" in figures else {}),
        }
    miou = {model: row["mean_iou"] for model, row in models.items()}
    train_seconds = {run: r["summary"]["train_seconds"] for run, r in runs.items()}
    goals = {
        "ratio_to_supervised": miou["weak"] / miou["supervised"],
        "ratio_reached": miou["weak"] >= RATIO_GOAL * miou["supervised"],
        "margin_over_cam": miou["weak"] - miou["cam"],
        "margin_reached": miou["weak"] >= miou["cam"] + MARGIN_GOAL,
        "time_reached": max(train_seconds.values()) <= MAX_TRAIN_SECONDS,
    }
    recipe = load_recipe(RECIPES["weak"], overrides)
    result = {
        "benchmark": "weakseg",
        "goal": GOAL,
        "weak_miou": miou["weak"],
        "cam_miou": miou["cam"],
        "gradcam_miou": miou["gradcam"],
        "supervised_miou": miou["supervised"],
        "raw_miou": {model: row["raw_mean_iou"] for model, row in models.items()},
        **goals,
        "reached": goals["ratio_reached"] and goals["margin_reached"] and goals["time_reached"],
        "models": models,
        "train_seconds": train_seconds,
        "wall_seconds": {run: r["wall_seconds"] for run, r in runs.items()},
        "load_average": {run: [r["load_average_start"], r["load_average_end"]] for run, r in runs.items()},
        "settings": {
            "data": recipe.data.name,
            "model": recipe.model.name,
            "model_options": recipe.model.options,
            "epochs": recipe.train.epochs,
            "batch_size": recipe.train.batch_size,
            "r": recipe.task.options.get("r", 0.5),
            "precision": recipe.train.precision,
            "channels_last": recipe.train.channels_last,
            "mean_iou": "torchmetrics MeanIoU: per image, over the 11 classes occurring in the prediction or truth",
            "refinement": "every model's masks through the same dense CRF search (convscope.segment.refine), kept "
            "where it beat the raw masks on the valid scenes; raw_miou gives the figures without it",
        },
        "recipes": list(RECIPES.values()),
    }
    path = write_result(result, "weakseg", overrides, machine, out, results_dir, run_dir=root)
    print(f"{'model':<12}{'mean IoU':>9}{'raw IoU':>9}{'mean SA':>9}{'pixel acc':>10}{'image acc':>10}{'train s':>9}"
          "  thresholds")  # fmt: skip
    for model, row in models.items():
        print(f"{model:<12}{row['mean_iou']:>9.4f}{row['raw_mean_iou']:>9.4f}{row['mean_segmentation_accuracy']:>9.4f}"
              f"{row['pixel_accuracy']:>10.4f}{row['image_accuracy'] or float('nan'):>10.4f}"
              f"{row['train_seconds']:>9.1f}  {row['params']} crf {row['crf']}")  # fmt: skip
    slowest = max(train_seconds.values())
    verdict = "reached" if result["reached"] else "NOT reached"
    print(f"weak / supervised = {goals['ratio_to_supervised']:.3f} (goal >= {RATIO_GOAL}), weak - cam = "
          f"{goals['margin_over_cam']:+.3f} (goal >= {MARGIN_GOAL}), slowest training {slowest:.0f} s "
          f"(goal <= {MAX_TRAIN_SECONDS:.0f}): {verdict}; written {path}")  # fmt: skip
    return result
