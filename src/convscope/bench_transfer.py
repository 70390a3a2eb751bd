"""The transfer-learning study (``convscope bench transfer``): does a body pre-trained on five CIFAR-10 classes
help five other classes learnt from 100 labelled images each?

Three runs of shipped recipes: ``cifar5-pretrain`` (airplane, automobile, bird, cat, deer; all 25,000 training
images), then ``cifar5-fewshot`` (dog, frog, horse, ship, truck; 100 images per class) once from scratch
(one phase at the full lr) and once from the pre-trained weights (seed 004's two phases). Both are measured
on the five classes' full test set (5,000 images).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from convscope.config import load_recipe

PRETRAIN_RECIPE = "cifar5-pretrain"
FEWSHOT_RECIPE = "cifar5-fewshot"
GOAL_POINTS = 0.10
GOAL = "transfer beats scratch by >= 10 accuracy points (ResNet-18, 5 new CIFAR-10 classes, 100 labels each)"


def _timed_run(recipe_name: str, overrides: dict[str, str], out: Path) -> tuple[dict, float | None]:
    """Train one run of the study; a finished run in ``out`` is kept and an interrupted one resumed, so a
    long study survives a restart. The wall time is None for a run finished earlier."""
    from convscope import api

    if (out / "summary.json").exists():
        print(f"kept the finished run {out}")
        return json.loads((out / "summary.json").read_text()), None
    started = time.perf_counter()
    api.train(load_recipe(recipe_name, overrides), out=out, resume=(out / "checkpoints").exists())
    return json.loads((out / "summary.json").read_text()), time.perf_counter() - started


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def _shown(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}"


def run_transfer_study(
    *,
    out: Path | None,
    overrides: dict[str, str] | None,
    results_dir: Path,
    machine: dict,
    run_dir: Path | None = None,
) -> dict:
    """Train the three runs under ``run_dir`` (default ``runs/bench-transfer-<time>/``; an existing one is
    continued), print the table, write the JSON."""
    overrides = overrides or {}
    root = run_dir or Path("runs") / f"bench-transfer-{time.strftime('%Y%m%d-%H%M%S')}"
    pretrain, pretrain_wall = _timed_run(PRETRAIN_RECIPE, overrides, root / "pretrain")
    # Scratch: one phase, every layer at the full lr (discriminative lrs protect pre-trained layers; on random
    # weights they would only slow the first layers down).
    scratch_overrides = {**overrides, "transfer.freeze_epochs": "0", "transfer.layer_lr_decay": "1"}
    scratch, scratch_wall = _timed_run(FEWSHOT_RECIPE, scratch_overrides, root / "scratch")
    transfer, transfer_wall = _timed_run(
        FEWSHOT_RECIPE, {**overrides, "transfer.init": str(root / "pretrain")}, root / "transfer"
    )
    gain = transfer["test_accuracy"] - scratch["test_accuracy"]
    recipe = load_recipe(FEWSHOT_RECIPE, overrides)
    result = {
        "benchmark": "transfer",
        "goal": GOAL,
        "scratch_accuracy": scratch["test_accuracy"],
        "transfer_accuracy": transfer["test_accuracy"],
        "gain_points": round(100 * gain, 2),
        "reached": gain >= GOAL_POINTS,
        "pretrain_accuracy": pretrain["test_accuracy"],
        "seconds": {
            "pretrain_train": pretrain["train_seconds"],
            "pretrain_wall": _rounded(pretrain_wall),
            "scratch_train": scratch["train_seconds"],
            "scratch_wall": _rounded(scratch_wall),
            "transfer_train": transfer["train_seconds"],
            "transfer_wall": _rounded(transfer_wall),
            "transfer_phases": {p["name"]: p["train_seconds"] for p in transfer.get("phases", [])},
        },
        "settings": {
            "model": recipe.model.name,
            "model_options": recipe.model.options,
            "pretrain_epochs": load_recipe(PRETRAIN_RECIPE, overrides).train.epochs,
            "fewshot_epochs": recipe.train.epochs,
            "freeze_epochs": recipe.transfer.freeze_epochs,
            "finetune_lr_factor": recipe.transfer.finetune_lr_factor,
            "precision": recipe.train.precision,
            "channels_last": recipe.train.channels_last,
        },
        "recipes": [PRETRAIN_RECIPE, FEWSHOT_RECIPE],
        "overrides": overrides,
        "run_dir": str(root),
        "command": "convscope bench transfer",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
    }
    path = out or results_dir / "transfer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    seconds = result["seconds"]
    print(f"{'run':<28}{'test accuracy':>14}{'train s':>10}{'wall s':>10}")
    print(
        f"{'pre-train (5 other classes)':<28}{pretrain['test_accuracy']:>14.4f}"
        f"{seconds['pretrain_train']:>10.1f}{_shown(seconds['pretrain_wall']):>10}"
    )
    print(
        f"{'scratch (100 per class)':<28}{scratch['test_accuracy']:>14.4f}"
        f"{seconds['scratch_train']:>10.1f}{_shown(seconds['scratch_wall']):>10}"
    )
    print(f"{'transfer (100 per class)':<28}{transfer['test_accuracy']:>14.4f}"
          f"{seconds['transfer_train']:>10.1f}{_shown(seconds['transfer_wall']):>10}")  # fmt: skip
    for name, phase_seconds in seconds["transfer_phases"].items():
        print(f"  transfer phase {name}: {phase_seconds:.1f} s")
    print(f"transfer - scratch = {result['gain_points']:+.2f} points (goal >= {100 * GOAL_POINTS:.0f}: "
          f"{'reached' if result['reached'] else 'NOT reached'}); written {path}")  # fmt: skip
    return result
