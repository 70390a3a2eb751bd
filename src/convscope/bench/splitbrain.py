"""The split-brain study (``convscope bench splitbrain``): does seed 001's self-supervised pre-training on
CIFAR-10's 50,000 training images (without labels) help when only 1% or 10% of the labels are known?

One ``cifar10-splitbrain`` run, then for each label fraction three ``cifar10-splitbrain-finetune`` runs on the
same stratified labelled subset and schedule: from scratch (random initialisation), fine-tuned from the
pre-trained weights, and a linear probe (the pre-trained encoders frozen, a linear classifier on their
concatenated outputs). All are measured on the full CIFAR-10 test set (10,000 images).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from convscope.bench.runs import write_result
from convscope.config import load_recipe
from convscope.run import read_json

PRETRAIN_RECIPE = "cifar10-splitbrain"
FINETUNE_RECIPE = "cifar10-splitbrain-finetune"
# Label fraction -> settings of its fine-tuning runs: ten times the images get fewer epochs.
FRACTIONS = {0.01: {}, 0.1: {"train.epochs": "8"}}
GOAL_POINTS = {0.01: 0.05, 0.1: 0.0}
MAX_PRETRAIN_SECONDS = 1800.0
GOAL = (
    "fine-tuned - scratch accuracy >= 5 points with 1% of the labels and > 0 with 10% (full CIFAR-10 test set); "
    "pre-training <= 30 minutes on 2 CPU cores"
)


def _timed_run(recipe_name: str, overrides: dict[str, str], out: Path) -> dict:
    from convscope import api

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    api.train(load_recipe(recipe_name, overrides), out=out)
    summary = read_json(out / "summary.json")
    return {
        "accuracy": summary["test_accuracy"],
        "top5_accuracy": summary["test"].get("top5_accuracy"),
        "epochs": summary["epochs"],
        "train_seconds": summary["train_seconds"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after
    }


def _fraction_runs(fraction: float, overrides: dict[str, str], pretrain_dir: Path, root: Path) -> dict:
    common = {**overrides, "data.label_fraction": str(fraction), **FRACTIONS[fraction]}
    epochs = load_recipe(FINETUNE_RECIPE, common).train.epochs
    runs = {
        "scratch": _timed_run(FINETUNE_RECIPE, common, root / "scratch"),
        "finetune": _timed_run(FINETUNE_RECIPE, {**common, "transfer.init": str(pretrain_dir)}, root / "finetune"),
        # Frozen for every epoch (one phase), a linear classifier: what the features alone are worth.
        "linear_probe": _timed_run(
            FINETUNE_RECIPE,
            {
                **common,
                "transfer.init": str(pretrain_dir),
                "transfer.freeze_epochs": str(epochs),
                "model.classifier": "shallow",
            },
            root / "linear-probe",
        ),
    }
    gain = runs["finetune"]["accuracy"] - runs["scratch"]["accuracy"]
    return {
        "scratch_accuracy": runs["scratch"]["accuracy"],
        "finetune_accuracy": runs["finetune"]["accuracy"],
        "linear_probe_accuracy": runs["linear_probe"]["accuracy"],
        "gain_points": round(100 * gain, 2),
        "goal_points": 100 * GOAL_POINTS[fraction],
        "reached": gain >= GOAL_POINTS[fraction] if GOAL_POINTS[fraction] else gain > 0,
        "labelled_images": round(fraction * 50_000),
        "runs": runs,
    }


def run_splitbrain_study(
    *, out: Path | None, overrides: dict[str, str] | None, results_dir: Path, machine: dict
) -> dict:
    """Train the seven runs under ``runs/bench-splitbrain-<time>/``, print the table, write the JSON."""
    overrides = overrides or {}
    root = Path("runs") / f"bench-splitbrain-{time.strftime('%Y%m%d-%H%M%S')}"
    pretrain = _timed_run(PRETRAIN_RECIPE, overrides, root / "pretrain")
    result: dict = {"benchmark": "splitbrain", "goal": GOAL}
    for fraction in FRACTIONS:
        result[str(fraction)] = _fraction_runs(fraction, overrides, root / "pretrain", root / f"labels-{fraction}")
    recipe = load_recipe(PRETRAIN_RECIPE, overrides)
    result.update(
        {
            "pretrain_seconds": pretrain["train_seconds"],
            "pretrain": pretrain,
            "reached": all(result[str(f)]["reached"] for f in FRACTIONS)
            and pretrain["train_seconds"] <= MAX_PRETRAIN_SECONDS,
            "settings": {
                "encoder": recipe.model.options.get("encoder"),
                "model_options": recipe.model.options,
                "pretrain_epochs": recipe.train.epochs,
                "finetune": {
                    str(f): {**load_recipe(FINETUNE_RECIPE, overrides).model.options, **s} for f, s in FRACTIONS.items()
                },
                "precision": recipe.train.precision,
                "channels_last": recipe.train.channels_last,
            },
            "recipes": [PRETRAIN_RECIPE, FINETUNE_RECIPE],
        }
    )
    path = write_result(result, "splitbrain", overrides, machine, out, results_dir, run_dir=root)
    print(f"pre-training: {pretrain['train_seconds']:.0f} s (goal <= {MAX_PRETRAIN_SECONDS:.0f}), "
          f"colour/lightness cell accuracy {pretrain['accuracy']:.4f}")  # fmt: skip
    print(f"{'labels':<8}{'scratch':>10}{'fine-tune':>11}{'probe':>9}{'gain':>8}")
    for fraction in FRACTIONS:
        row = result[str(fraction)]
        print(f"{fraction:<8}{row['scratch_accuracy']:>10.4f}{row['finetune_accuracy']:>11.4f}"
              f"{row['linear_probe_accuracy']:>9.4f}{row['gain_points']:>+8.2f}")  # fmt: skip
    print(f"goal ({GOAL}): {'reached' if result['reached'] else 'NOT reached'}; written {path}")
    return result
