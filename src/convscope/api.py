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
import torchvision.transforms.v2.functional as TF
from safetensors.torch import load_file, save_file
from torch import nn

from convscope.config import Recipe, load_recipe, read_toml, recipe_from_dict, write_recipe_toml
from convscope.data.augment import build_augment
from convscope.data.catalog import open_dataset
from convscope.data.datamodule import ImageData, make_loader, prepare_image_data
from convscope.data.images import decode_image, fit_size
from convscope.engine import Trainer
from convscope.engine.checkpoint import load_model_state
from convscope.engine.optim import resolve_device
from convscope.engine.seeding import seed_everything
from convscope.errors import UserError
from convscope.models import create_model
from convscope.report.plots import plot_confusion_matrix, plot_run
from convscope.tasks import TASKS

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

    data = prepare_image_data(
        recipe.data.name,
        valid_fraction=recipe.data.valid_fraction,
        test_fraction=recipe.data.test_fraction,
        seed=recipe.train.seed,
        skip_bad=recipe.data.skip_bad,
        subset=recipe.data.subset,
    )
    info = data.describe()
    task = build_task(recipe, len(data.classes))
    seed_everything(recipe.train.seed)  # the initial weights are part of what the seed fixes
    model = build_model(recipe, info)

    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_recipe_toml(recipe, run_dir / CONFIG_FILE)
        _write_json(run_dir / RUN_FILE, {"model": recipe.model.name, "model_options": recipe.model.options, **info})
    _say(f"run directory: {run_dir}")
    _say(
        f"data: {data.dataset.name} ({info['sizes']['train']} train / {info['sizes']['valid']} valid / "
        f"{info['sizes']['test']} test, {len(data.classes)} classes, "
        f"{info['channels']}x{info['image_size'][0]}x{info['image_size'][1]})"
    )
    if data.dataset.skipped:
        _say(f"skipped {len(data.dataset.skipped)} unreadable files: " + ", ".join(data.dataset.skipped[:5]))

    trainer = Trainer(
        model,
        task,
        recipe.optim,
        recipe.train,
        run_dir=run_dir,
        checkpoint_extra={"recipe": recipe.to_dict(), "data": info},
    )
    loaders = _loaders(recipe, data, trainer.device)
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


def build_task(recipe: Recipe, num_classes: int):
    return call_with_options(
        TASKS.get(recipe.task.name), recipe.task.options, f"task {recipe.task.name!r}", num_classes=num_classes
    )


def build_model(recipe: Recipe, info: dict) -> nn.Module:
    crop = recipe.augment.center_crop
    return create_model(
        recipe.model.name,
        num_classes=len(info["classes"]),
        in_channels=info["channels"],
        # What the network sees: the stored size, or the centre crop of it.
        image_size=(crop, crop) if crop else tuple(info["image_size"]),
        **recipe.model.options,
    )


def call_with_options(fn: Callable[..., Any], options: dict[str, Any], what: str, **fixed: Any) -> Any:
    """Call a registered constructor, naming any option it does not take."""
    accepted = [name for name in inspect.signature(fn).parameters if name not in fixed]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"{what} has no option {unknown[0]!r}; expected one of: {', '.join(accepted)}")
    return fn(**fixed, **options)


def _loaders(recipe: Recipe, data: ImageData, device: torch.device) -> dict:
    common = {
        "mean": data.mean,
        "std": data.std,
        "device": device,
        "channels_last": recipe.train.channels_last,
        "augment": recipe.augment,
    }
    loaders = {
        "train": make_loader(data.train, recipe.train.batch_size, train=True, seed=recipe.train.seed, **common),
        "test": make_loader(data.test, recipe.data.eval_batch_size, **common),
    }
    if data.valid is not None:
        loaders["valid"] = make_loader(data.valid, recipe.data.eval_batch_size, **common)
    return loaders


@dataclass
class LoadedRun:
    """A trained run, ready for inference."""

    run_dir: Path
    recipe: Recipe
    info: dict
    model: nn.Module
    task: Any
    device: torch.device

    @property
    def classes(self) -> list[str]:
        return self.info["classes"]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW at the run's size -> normalised float on the run's device (the evaluation transform)."""
        x = images.to(self.device).float().div_(255)
        evaluation = build_augment(self.recipe.augment, train=False)
        if evaluation is not None:
            x = evaluation(x, torch.Generator())
        return TF.normalize(x, self.info["mean"], self.info["std"])


def load_run(run_dir: str | Path, device: str = "auto") -> LoadedRun:
    run_dir = Path(run_dir)
    recipe = read_run_recipe(run_dir)
    info_path, weights = run_dir / RUN_FILE, run_dir / WEIGHTS_FILE
    if not info_path.is_file() or not weights.is_file():
        raise UserError(f"run '{run_dir}' has no trained model yet ({WEIGHTS_FILE} missing): did training finish?")
    info = json.loads(info_path.read_text())
    model = build_model(recipe, info)
    load_model_state(model, load_file(weights), weights)
    resolved = resolve_device(device)
    model.to(resolved).eval()
    return LoadedRun(run_dir, recipe, info, model, build_task(recipe, len(info["classes"])), resolved)


def evaluate(run_dir: str | Path, *, data: str | None = None, skip_bad: bool = False) -> dict:
    """Detailed test metrics of a run, written to ``RUN_DIR/eval.json`` with a confusion-matrix plot.

    Without ``data`` the run's own test split is used (the same images as at the end of training).
    """
    run = load_run(run_dir)
    recipe = run.recipe
    if data is None:
        test = prepare_image_data(
            recipe.data.name,
            valid_fraction=recipe.data.valid_fraction,
            test_fraction=recipe.data.test_fraction,
            seed=recipe.train.seed,
            skip_bad=skip_bad or recipe.data.skip_bad,
        ).test
        source = recipe.data.name
    else:
        dataset = open_dataset(data, skip_bad=skip_bad)
        test = dataset.splits.get("test", dataset.splits["train"])
        _check_compatible(run, dataset.classes, dataset.channels, dataset.image_size, data)
        source = data
    loader = make_loader(
        test,
        recipe.data.eval_batch_size,
        mean=run.info["mean"],
        std=run.info["std"],
        device=run.device,
        channels_last=recipe.train.channels_last,
        augment=recipe.augment,
    )
    metrics = run.task.make_metrics(detailed=True).to(run.device)
    bf16 = recipe.train.precision == "bf16"
    with torch.inference_mode(), torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=bf16):
        for batch in loader:
            run.task.validation_step(run.model, batch, metrics)
    values = {k: v.cpu() for k, v in metrics.compute().items()}
    result = {
        "run": str(run.run_dir),
        "data": source,
        "images": len(test),
        "loss": values["loss"].item(),
        "accuracy": values["accuracy"].item(),
        "error_rate": 1.0 - values["accuracy"].item(),
        **{k: v.item() for k, v in values.items() if k.startswith("top")},
        "per_class_accuracy": dict(zip(run.classes, values["per_class_accuracy"].tolist(), strict=True)),
        "classes": run.classes,
        "confusion_matrix": values["confusion_matrix"].tolist(),
    }
    _write_json(run.run_dir / "eval.json", result)
    plot_confusion_matrix(values["confusion_matrix"], run.classes, run.run_dir / "plots" / "confusion_matrix.png")
    return result


def _check_compatible(run: LoadedRun, classes: list[str], channels: int, size: tuple[int, int], spec: str) -> None:
    if classes != run.classes:
        raise UserError(f"data {spec!r} has classes {classes}, but the run was trained on {run.classes}")
    if channels != run.info["channels"] or list(size) != run.info["image_size"]:
        raise UserError(
            f"data {spec!r} has {channels}x{size[0]}x{size[1]} images, "
            f"the run expects {run.info['channels']}x{run.info['image_size'][0]}x{run.info['image_size'][1]}"
        )


def predict(run_dir: str | Path, inputs: Sequence[str | Path], *, topk: int = 3) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) for each raw image file, through the evaluation transform."""
    run = load_run(run_dir)
    images = torch.stack([load_for_run(Path(p), run.info) for p in inputs])
    probs = run.task.predict(run.model, run.preprocess(images)).cpu()
    k = min(topk, len(run.classes))
    values, indices = probs.topk(k, dim=1)
    return [
        [(run.classes[i], p) for i, p in zip(row_i.tolist(), row_p.tolist(), strict=True)]
        for row_i, row_p in zip(indices, values, strict=True)
    ]


def load_for_run(path: Path, info: dict) -> torch.Tensor:
    """Decode an image file and bring it to the run's channels and size (scale to cover, then centre crop)."""
    if not path.is_file():
        raise UserError(f"input image '{path}' does not exist")
    return fit_size(decode_image(path, info["channels"]), tuple(info["image_size"]))


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _say(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, flush=True)
