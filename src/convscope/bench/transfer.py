"""The transfer-learning study (``convscope bench transfer``): does a body pre-trained on five CIFAR-10 classes
help five other classes learnt from 100 labelled images each?

Runs of two shipped recipes: ``cifar5-pretrain`` (airplane, automobile, bird, cat, deer; all 25,000 training
images), then ``cifar5-fewshot`` (dog, frog, horse, ship, truck; 100 images per class) once from scratch
(one phase at the full lr) and once from the pre-trained weights (seed 004's two phases). Both are measured
on the five classes' full test set (5,000 images). Which 100 images a class gets moves either accuracy by a point
or two (benchmarks/README.md), so the few-shot pair runs for three draws (``train.seed`` 0, 1, 2: the labelled
images, the initialisation, the order) and the study reports their mean beside each draw; ``--set train.seed=N``
runs one draw.
"""

from __future__ import annotations

import time
from pathlib import Path
from statistics import fmean

from convscope.bench.runs import timed_run, write_result
from convscope.config import load_recipe

PRETRAIN_RECIPE = "cifar5-pretrain"
FEWSHOT_RECIPE = "cifar5-fewshot"
GOAL_POINTS = 0.10
DRAWS = (0, 1, 2)
GOAL = "transfer beats scratch by >= 10 accuracy points (ResNet-18, 5 new CIFAR-10 classes, 100 labels each)"


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def _shown(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}"


def _draw(seed: int, overrides: dict[str, str], root: Path) -> dict:
    """One draw of 100 labelled images per class: the scratch run and the transfer run."""
    seeded = {**overrides, "train.seed": str(seed)}
    # Scratch: one phase, every layer at the full lr and every batch norm learning its statistics (discriminative
    # lrs and frozen statistics protect pre-trained layers; on random weights they would only hold them back).
    scratch_overrides = {**seeded, "transfer.freeze_epochs": "0", "transfer.layer_lr_decay": "1",
                         "transfer.freeze_bn_stats": "false"}  # fmt: skip
    scratch, scratch_wall = timed_run(FEWSHOT_RECIPE, scratch_overrides, root / f"scratch-seed{seed}")
    transfer, transfer_wall = timed_run(
        FEWSHOT_RECIPE, {**seeded, "transfer.init": str(root / "pretrain")}, root / f"transfer-seed{seed}"
    )
    return {
        "seed": seed,
        "scratch_accuracy": scratch["test_accuracy"],
        "transfer_accuracy": transfer["test_accuracy"],
        "gain_points": round(100 * (transfer["test_accuracy"] - scratch["test_accuracy"]), 2),
        "seconds": {
            "scratch_train": scratch["train_seconds"],
            "scratch_wall": _rounded(scratch_wall),
            "transfer_train": transfer["train_seconds"],
            "transfer_wall": _rounded(transfer_wall),
            "transfer_phases": {p["name"]: p["train_seconds"] for p in transfer.get("phases", [])},
        },
    }


def run_transfer_study(
    *,
    out: Path | None,
    overrides: dict[str, str] | None,
    results_dir: Path,
    machine: dict,
    run_dir: Path | None = None,
) -> dict:
    """Train the runs under ``run_dir`` (default ``runs/bench-transfer-<time>/``; an existing one is continued),
    print the table, write the JSON."""
    overrides = dict(overrides or {})
    # One draw when the user names its seed (load_recipe checks the value: a bad one is an `error:` line).
    seeds = (load_recipe(FEWSHOT_RECIPE, overrides).train.seed,) if "train.seed" in overrides else DRAWS
    overrides.pop("train.seed", None)
    root = run_dir or Path("runs") / f"bench-transfer-{time.strftime('%Y%m%d-%H%M%S')}"
    pretrain, pretrain_wall = timed_run(PRETRAIN_RECIPE, overrides, root / "pretrain")
    draws = [_draw(seed, overrides, root) for seed in seeds]
    scratch_mean = fmean([d["scratch_accuracy"] for d in draws])
    transfer_mean = fmean([d["transfer_accuracy"] for d in draws])
    gain = transfer_mean - scratch_mean
    recipe = load_recipe(FEWSHOT_RECIPE, overrides)
    result = {
        "benchmark": "transfer",
        "goal": GOAL,
        "scratch_accuracy": scratch_mean,
        "transfer_accuracy": transfer_mean,
        "gain_points": round(100 * gain, 2),
        "reached": gain >= GOAL_POINTS,
        "draws": draws,
        "pretrain_accuracy": pretrain["test_accuracy"],
        "seconds": {"pretrain_train": pretrain["train_seconds"], "pretrain_wall": _rounded(pretrain_wall)},
        "settings": {
            "model": recipe.model.name,
            "model_options": recipe.model.options,
            "pretrain_epochs": load_recipe(PRETRAIN_RECIPE, overrides).train.epochs,
            "fewshot_epochs": recipe.train.epochs,
            "freeze_epochs": recipe.transfer.freeze_epochs,
            "finetune_lr_factor": recipe.transfer.finetune_lr_factor,
            "layer_lr_decay": recipe.transfer.layer_lr_decay,
            "precision": recipe.train.precision,
            "channels_last": recipe.train.channels_last,
        },
        "recipes": [PRETRAIN_RECIPE, FEWSHOT_RECIPE],
    }
    path = write_result(result, "transfer", overrides, machine, out, results_dir, run_dir=root)
    print(f"{'run':<32}{'test accuracy':>14}{'train s':>10}{'wall s':>10}")
    print(f"{'pre-train (5 other classes)':<32}{pretrain['test_accuracy']:>14.4f}"
          f"{pretrain['train_seconds']:>10.1f}{_shown(result['seconds']['pretrain_wall']):>10}")  # fmt: skip
    for draw in draws:
        seconds = draw["seconds"]
        for name in ("scratch", "transfer"):
            label = f"{name} (100 per class, seed {draw['seed']})"
            print(f"{label:<32}{draw[f'{name}_accuracy']:>14.4f}"
                  f"{seconds[f'{name}_train']:>10.1f}{_shown(seconds[f'{name}_wall']):>10}")  # fmt: skip
        phases = ", ".join(f"{name} {s:.1f} s" for name, s in seconds["transfer_phases"].items())
        print(f"  gain {draw['gain_points']:+.2f} points; transfer phases: {phases}")
    print(f"mean over {len(draws)} draw(s): scratch {scratch_mean:.4f}, transfer {transfer_mean:.4f}, "
          f"transfer - scratch = {result['gain_points']:+.2f} points (goal >= {100 * GOAL_POINTS:.0f}: "
          f"{'reached' if result['reached'] else 'NOT reached'}); written {path}")  # fmt: skip
    return result
