"""The Python API under every command: train, evaluate, predict, load a run.

>>> from convscope import api
>>> run_dir = api.train(api.load_recipe("fashion-mnist", {"train.epochs": "1"}))
>>> api.predict(run_dir, ["shoe.png"])
"""

from __future__ import annotations

import inspect
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from convscope.config import Recipe, load_recipe, read_toml, recipe_from_dict, write_recipe_toml
from convscope.data.modality import Modality, get_modality
from convscope.engine import Trainer
from convscope.engine.checkpoint import load_model_state
from convscope.engine.optim import resolve_device
from convscope.engine.seeding import seed_everything
from convscope.errors import UserError
from convscope.models import create_model
from convscope.report.plots import plot_confusion_matrix, plot_run
from convscope.tasks import TASKS, Task

__all__ = ["LoadedRun", "evaluate", "load_recipe", "load_run", "predict", "train"]

CONFIG_FILE = "config.toml"
RUN_FILE = "run.json"
WEIGHTS_FILE = "model.safetensors"


def train(recipe: Recipe, *, out: str | Path | None = None, resume: bool = False) -> Path:
    """Train ``recipe`` into a run directory and return it.

    With ``resume``, ``out`` must hold an interrupted run; its saved recipe is used.
    """
    run_dir = Path(out) if out is not None else default_run_dir(recipe.name)
    if resume:
        recipe = read_run_recipe(run_dir)
    elif (run_dir / "checkpoints").exists():
        raise UserError(f"run directory '{run_dir}' already holds a run; pass --resume to continue it or another --out")

    modality = get_modality(TASKS.get(recipe.task.name).modality)
    data = modality.prepare(recipe)
    info = data.info
    task = build_task(recipe, info)
    seed_everything(recipe.train.seed)  # the initial weights are part of what the seed fixes
    model = build_model(recipe, info, modality)

    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_recipe_toml(recipe, run_dir / CONFIG_FILE)
        _write_json(run_dir / RUN_FILE, {"model": recipe.model.name, "model_options": recipe.model.options, **info})
    _say(f"run directory: {run_dir}")
    sizes, classes = info["sizes"], info["classes"]
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    _say(
        f"data: {info['dataset']} ({sizes['train']} train / {sizes['valid']} valid / {sizes['test']} test; "
        f"{len(classes)} classes: {shown})"
    )
    if info.get("skipped"):
        _say(f"skipped {len(info['skipped'])} unreadable files: " + ", ".join(info["skipped"][:5]))

    trainer = Trainer(
        model,
        task,
        recipe.optim,
        recipe.train,
        run_dir=run_dir,
        checkpoint_extra={"recipe": recipe.to_dict(), "data": info},
    )
    loaders = data.loaders(recipe, trainer.device)
    history = trainer.fit(loaders["train"], loaders.get("valid"), resume=resume)

    trainer.load_best()
    test = trainer.evaluate(loaders["test"])
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, run_dir / WEIGHTS_FILE)
    summary = {
        "task": recipe.task.name,
        "dataset": recipe.data.name,
        "model": recipe.model.name,
        "recipe": recipe.name,
        "epochs": len(history.valid) if history.valid else recipe.train.epochs,
        "train_seconds": round(history.train_seconds, 2),
        "test_accuracy": test.get("accuracy"),
        "test_loss": test.get("loss"),
        "test_error_rate": 1.0 - test["accuracy"] if "accuracy" in test else None,
        "best_valid_accuracy": max((row.get("accuracy", 0.0) for row in history.valid), default=None),
        "test": test,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(trainer.device),
        "precision": recipe.train.precision,
        "seed": recipe.train.seed,
    }
    _write_json(run_dir / "summary.json", summary)
    plot_run(run_dir)
    _say(
        f"test accuracy {summary['test_accuracy']:.4f}, loss {summary['test_loss']:.4f} "
        f"after {summary['train_seconds']:.1f} s of training; summary: {run_dir / 'summary.json'}"
    )
    return run_dir


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_run_recipe(run_dir: Path) -> Recipe:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"'{run_dir}' is not a run directory: {CONFIG_FILE} is missing")
    return recipe_from_dict(read_toml(path), source=str(path))


def build_task(recipe: Recipe, info: dict) -> Task:
    constructor = TASKS.get(recipe.task.name)
    return call_with_options(constructor, recipe.task.options, f"task {recipe.task.name!r}",
                             num_classes=len(info["classes"]))  # fmt: skip


def build_model(recipe: Recipe, info: dict, modality: Modality) -> nn.Module:
    return create_model(
        recipe.model.name,
        num_classes=len(info["classes"]),
        inputs=modality.model_inputs(recipe, info),
        **recipe.model.options,
    )


def call_with_options(fn: Callable[..., Any], options: dict[str, Any], what: str, **fixed: Any) -> Any:
    """Call a registered constructor, naming any option it does not take."""
    accepted = [name for name in inspect.signature(fn).parameters if name not in fixed]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"{what} has no option {unknown[0]!r}; expected one of: {', '.join(accepted)}")
    return fn(**fixed, **options)


@dataclass
class LoadedRun:
    """A trained run, ready for inference."""

    run_dir: Path
    recipe: Recipe
    info: dict
    model: nn.Module
    task: Task
    modality: Modality
    device: torch.device

    @property
    def classes(self) -> list[str]:
        return self.info["classes"]


def load_run(run_dir: str | Path, device: str = "auto") -> LoadedRun:
    run_dir = Path(run_dir)
    recipe = read_run_recipe(run_dir)
    info_path, weights = run_dir / RUN_FILE, run_dir / WEIGHTS_FILE
    if not info_path.is_file() or not weights.is_file():
        raise UserError(f"run '{run_dir}' has no trained model yet ({WEIGHTS_FILE} missing): did training finish?")
    info = json.loads(info_path.read_text())
    task = build_task(recipe, info)
    modality = get_modality(task.modality)
    model = build_model(recipe, info, modality)
    load_model_state(model, load_file(weights), weights)
    resolved = resolve_device(device)
    model.to(resolved).eval()
    return LoadedRun(run_dir, recipe, info, model, task, modality, resolved)


def evaluate(run_dir: str | Path, *, data: str | None = None, skip_bad: bool = False) -> dict:
    """Detailed test metrics of a run, written to ``RUN_DIR/eval.json`` with a confusion-matrix plot.

    Without ``data`` the run's own test split is used (the same images as at the end of training).
    """
    run = load_run(run_dir)
    recipe = run.recipe
    if data is None:
        loader = run.modality.prepare(recipe, skip_bad=skip_bad).loaders(recipe, run.device)["test"]
    else:
        loader = run.modality.evaluation_loader(recipe, run.info, data, run.device)
    metrics = run.task.make_metrics(detailed=True).to(run.device)
    bf16 = recipe.train.precision == "bf16"
    with torch.inference_mode(), torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=bf16):
        for batch in loader:
            run.task.validation_step(run.model, batch, metrics)
    values = {k: v.cpu() for k, v in metrics.compute().items()}
    confusion = values["confusion_matrix"]
    result = {
        "run": str(run.run_dir),
        "data": data or recipe.data.name,
        "images": int(confusion.sum()),
        "loss": values["loss"].item(),
        "accuracy": values["accuracy"].item(),
        "error_rate": 1.0 - values["accuracy"].item(),
        **{k: v.item() for k, v in values.items() if k.startswith("top")},
        "per_class_accuracy": dict(zip(run.classes, values["per_class_accuracy"].tolist(), strict=True)),
        "classes": run.classes,
        "confusion_matrix": confusion.tolist(),
    }
    _write_json(run.run_dir / "eval.json", result)
    plot_confusion_matrix(confusion, run.classes, run.run_dir / "plots" / "confusion_matrix.png")
    return result


def predict(run_dir: str | Path, inputs: Sequence[str | Path], *, topk: int = 3) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) for each raw input (an image file, a text), through the evaluation
    transform."""
    run = load_run(run_dir)
    x = run.modality.load_inputs(run.recipe, run.info, [str(i) for i in inputs], run.device)
    probs = run.task.predict(run.model, x).cpu()
    k = min(topk, len(run.classes))
    values, indices = probs.topk(k, dim=1)
    return [
        [(run.classes[i], p) for i, p in zip(row_i.tolist(), row_p.tolist(), strict=True)]
        for row_i, row_p in zip(indices, values, strict=True)
    ]


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _say(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, flush=True)
