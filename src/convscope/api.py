"""The Python API under every command: train, evaluate, predict, load a run.

>>> from convscope import api
>>> run_dir = api.train(api.load_recipe("fashion-mnist", {"train.epochs": "1"}))
>>> api.predict(run_dir, ["shoe.png"])
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from convscope import adapt
from convscope.config import (
    AugmentConfig,
    NamedConfig,
    Recipe,
    load_recipe,
    read_toml,
    recipe_from_dict,
    validated,
    write_recipe_toml,
)
from convscope.data.modalities import Modality, get_modality
from convscope.detect.evaluation import detection_evaluation, plot_detection
from convscope.detect.images import detect_images, write_detections
from convscope.distributed import rank_and_world_size, same_on_all_ranks
from convscope.engine.callbacks import Callback
from convscope.engine.checkpoint import load_model_state
from convscope.engine.finetune import (
    PHASE1_DIR,
    backbone_of,
    combined_history,
    discriminative_groups,
    plan_phases,
    set_frozen,
    train_in_phases,
)
from convscope.engine.lr_find import RULE, LRFindSettings, find_lr
from convscope.engine.optim import resolve_device
from convscope.engine.seeding import seed_everything
from convscope.errors import UserError
from convscope.metrics.classification import accuracy_interval
from convscope.metrics.classification import summarize as summarize_classification
from convscope.models import create_model
from convscope.models.pretrained import is_pretrained_name, load_pretrained
from convscope.models.tta import TestTimeAugmented, tta_geometry
from convscope.models.weights import load_initial_weights
from convscope.models.whitening import FIT_IMAGES as WHITENING_FIT_IMAGES
from convscope.models.whitening import PatchWhitening, fit_to_data
from convscope.report.boxes import DISPLAY_SCORE
from convscope.report.lr_find import plot_lr_find
from convscope.report.plots import HistoryFigure, plot_confusion_matrix, plot_precision_recall, plot_roc, plot_run
from convscope.run import (
    RUN_FILE,
    LoadedRun,
    WriteFailed,
    atomic_write,
    damaged,
    hint,
    read_run_info,
    read_weights,
    write_json,
)
from convscope.segment.segmentation import segment_images
from convscope.serve import export
from convscope.serve.inference import InferenceConfig, autocast, batched, prepare_model
from convscope.tasks import TASKS, Task

if TYPE_CHECKING:
    from convscope.explain.figures import Display

__all__ = [
    "LoadedRun",
    "evaluate",
    "explain",
    "load_recipe",
    "load_run",
    "lr_find",
    "predict",
    "report",
    "segment",
    "train",
]

CONFIG_FILE = "config.toml"
WEIGHTS_FILE = "model.safetensors"


def train(
    recipe: Recipe, *, out: str | Path | None = None, resume: bool = False, callbacks: Sequence[Callback] = ()
) -> Path:
    """Train ``recipe`` into a run directory and return it.

    With ``resume``, ``out`` must hold an interrupted run; its saved recipe is used. ``callbacks`` join the
    task's own (the speed benchmark times epochs and measures test accuracy through one).
    """
    # Under torchrun every rank must use rank 0's directory (default names hold the time).
    run_dir = same_on_all_ranks(Path(out) if out is not None else default_run_dir(recipe))
    try:
        return _train(recipe, run_dir, resume=resume, callbacks=callbacks)
    except WriteFailed as e:  # a full disk: what is safe and how to go on
        raise WriteFailed(e.path, f"{e}; {_after_write_failure(run_dir, e)}", disk_full=e.disk_full) from None


def _after_write_failure(run_dir: Path, failure: WriteFailed) -> str:
    fix = "make room on the disk" if failure.disk_full else "fix that"
    checkpoints = [run_dir / "checkpoints" / "last.pt", run_dir / PHASE1_DIR / "checkpoints" / "last.pt"]
    last = next((path for path in checkpoints if path.is_file()), None)
    if last is None:
        return f"no checkpoint was written yet: {fix} and train again"
    return f"the last good checkpoint {last} stays valid: {fix}, then `convscope train --resume --out {run_dir}`"


@dataclass
class _Setup:
    """What training starts from: the recipe (adapted to the data), its data, task and model (initial weights)."""

    recipe: Recipe
    modality: Modality
    data: Any
    info: dict[str, Any]
    task: Task
    model: nn.Module


def _set_up(recipe: Recipe, *, adapt_recipe: bool, world_size: int = 1) -> _Setup:
    """Prepare the recipe's data, task and model (seeded); ``adapt_recipe`` fits the recipe to the data first."""
    modality = get_modality(TASKS.get(recipe.task.name).modality)
    if adapt_recipe:
        recipe = adapt.before_data(recipe, _note)
    data = modality.prepare(recipe)
    info = data.info
    if adapt_recipe:
        recipe = adapt.after_data(recipe, info["sizes"]["train"], world_size, _note)
    task = build_task(recipe, info)
    if recipe.train.monitor == "accuracy" and task.monitor != "accuracy":  # the default, for a task without it
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, monitor=task.monitor,
                                                                       monitor_mode=task.monitor_mode))  # fmt: skip
    seed_everything(recipe.train.seed)  # the initial weights are part of what the seed fixes
    model = build_model(recipe, info, modality, task.num_outputs)
    info = {**info, **task.data_notes(model, data)}
    return _Setup(recipe, modality, data, info, task, model)


def _train(recipe: Recipe, run_dir: Path, *, resume: bool, callbacks: Sequence[Callback]) -> Path:
    rank, world_size = rank_and_world_size()
    recipe = _starting_recipe(recipe, run_dir, resume)
    setup = _set_up(recipe, adapt_recipe=not resume, world_size=world_size)  # a resumed run's recipe is adapted
    _open_run_dir(setup, run_dir, write=not resume and rank == 0)
    if not resume:  # a resumed run restores all its weights, fitted layers included, from its checkpoints
        initialise_model(setup.model, setup.data, setup.recipe, setup.task)
    setup.task.observe_training_data(setup.data)  # a task that needs more than batches (e.g. a class prior)
    loaders = setup.data.loaders(setup.recipe, resolve_device(setup.recipe.train.device))
    phases = _fit(setup, loaders, run_dir, resume, callbacks)
    trainer = phases[-1].trainer
    trainer.load_best()
    test = trainer.evaluate(loaders["test"])
    if rank != 0:  # only rank 0 writes files
        return run_dir
    weights = safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in setup.model.state_dict().items()})
    atomic_write(run_dir / WEIGHTS_FILE, lambda f: f.write(weights))
    summary = _summary(setup, phases, test)
    # figures a task measures once trained (weakseg: masks against the truth)
    summary.update(setup.task.after_training(setup.model, loaders, run_dir, setup.info, setup.recipe.train.precision))
    if len(phases) > 1:
        summary["phases"] = [
            {"name": r.phase.name, "epochs": r.phase.epochs, "lr": r.trainer.optim_config.lr,
             "backbone_frozen": r.phase.frozen, "train_seconds": round(r.history.train_seconds, 2)}
            for r in phases
        ]  # fmt: skip
        plot_run(run_dir / PHASE1_DIR)
    write_json(run_dir / "summary.json", summary)
    plot_run(run_dir)
    _say_result(summary, run_dir)
    return run_dir


def _starting_recipe(recipe: Recipe, run_dir: Path, resume: bool) -> Recipe:
    """The recipe a run starts from: the saved one of a resumed run, else ``recipe`` checked."""
    if resume:
        return read_run_recipe(run_dir)
    if (run_dir / "checkpoints").exists() or (run_dir / PHASE1_DIR / "checkpoints").exists():
        raise UserError(f"run directory '{run_dir}' already holds a run; pass --resume to continue it or another --out")
    # an API caller's recipe too: refused now, not after training, if its config.toml could not be read back
    return validated(recipe)


def _open_run_dir(setup: _Setup, run_dir: Path, *, write: bool) -> None:
    """Make the run directory, write its recipe and data (``write``), and say what is trained on what."""
    recipe, info = setup.recipe, setup.info
    run_dir.mkdir(parents=True, exist_ok=True)
    if write:
        write_recipe_toml(recipe, run_dir / CONFIG_FILE)
        write_json(run_dir / RUN_FILE, {"model": recipe.model.name, "model_options": recipe.model.options, **info})
    _say(f"run directory: {run_dir}")
    if recipe.on_other_data:
        _say(f"recipe {recipe.name!r} (written for {recipe.made_for!r}) on data {recipe.data.name!r}")
    _say(data_line(info, recipe))
    if info.get("skipped"):
        _say(f"skipped {len(info['skipped'])} unreadable files: " + ", ".join(info["skipped"][:5]))


def _fit(setup: _Setup, loaders: dict[str, Any], run_dir: Path, resume: bool, callbacks: Sequence[Callback]) -> list:
    """Train in the recipe's phases, with the task's callbacks (its per-epoch figures) and the caller's."""
    recipe = setup.recipe
    task_callbacks = setup.task.callbacks(loaders, run_dir, setup.info)
    if "tensorboard" in recipe.train.loggers:  # the training history as a TensorBoard image at every epoch end
        task_callbacks.append(HistoryFigure())
    return train_in_phases(
        setup.model,
        setup.task,
        recipe.optim,
        recipe.train,
        recipe.transfer,
        run_dir=run_dir,
        train_loader=loaders["train"],
        valid_loader=loaders.get("valid"),
        resume=resume,
        callbacks=[*task_callbacks, *callbacks],
        checkpoint_extra={"recipe": recipe.to_dict(), "data": setup.info},
        say=_say,
    )


def _summary(setup: _Setup, phases: list, test: dict[str, float]) -> dict[str, Any]:
    """``summary.json``'s fields of a trained run."""
    recipe, trainer, history = setup.recipe, phases[-1].trainer, combined_history(phases)
    test_images = setup.info["sizes"]["test"]
    summary = {
        "task": recipe.task.name,
        "dataset": recipe.data.name,
        "data": recipe.data.name,
        "model": recipe.model.name,
        "recipe": recipe.name,
        "recipe_data": recipe.made_for,  # the data the recipe was written for
        "batch_size": recipe.train.batch_size,
        "epochs": len(history.valid) if history.valid else recipe.train.epochs,
        "train_seconds": round(history.train_seconds, 2),
        "test_accuracy": test.get("accuracy"),
        "test_loss": test.get("loss"),
        "test_error_rate": 1.0 - test["accuracy"] if "accuracy" in test else None,
        "test_images": test_images,
        "test_accuracy_ci95": list(accuracy_interval(test["accuracy"], test_images)) if "accuracy" in test else None,
        # None without a validation split (the cifar10 recipe trains on all 50,000 images)
        "best_valid_accuracy": max((row["accuracy"] for row in history.valid if "accuracy" in row), default=None),
        "test": test,
        "parameters": sum(p.numel() for p in setup.model.parameters()),
        "device": str(trainer.device),
        "precision": recipe.train.precision,
        "seed": recipe.train.seed,
    }
    if "map50" in test:  # a detect run: its test figures beside the loss
        summary.update(test_map50=test["map50"], test_map50_95=test["map50_95"])
    if trainer.diverged is not None:
        summary["diverged"] = trainer.diverged
    return summary


def _say_result(summary: dict[str, Any], run_dir: Path) -> None:
    test_images = summary["test_images"]
    accuracy = ""
    if summary["test_accuracy"] is not None:
        low, high = summary["test_accuracy_ci95"]
        small = "; a small test split, set data.test_fraction for more" if test_images < SMALL_TEST_SPLIT else ""
        accuracy = (f"accuracy {summary['test_accuracy']:.4f} (95% interval {low:.3f}-{high:.3f} over {test_images} "
                    f"images{small}), ")  # fmt: skip
    if "test_map50" in summary:
        accuracy = f"mAP@0.5 {summary['test_map50']:.4f}, mAP@[.5:.95] {summary['test_map50_95']:.4f}, "
    _say(
        f"test {accuracy}loss {summary['test_loss']:.4f} "
        f"after {summary['train_seconds']:.1f} s of training; summary: {run_dir / 'summary.json'}"
    )


LR_FIND_FILE = Path("lr_find.png")
LR_FIND_FORMATS = (".png", ".svg", ".pdf")


def lr_find(recipe: Recipe, *, out: str | Path = LR_FIND_FILE, settings: LRFindSettings | None = None) -> dict:
    """The learning-rate range test (see :mod:`convscope.engine.lr_find`) on the model ``train`` would start
    from: the same data, task, initial weights (fitted layers, ``transfer.init``) and optimiser, the schedule
    ignored (a constant lr per step, growing exponentially). The suggestion is the steepest descent of the
    smoothed loss, never past its minimum. Writes the figure to ``out`` and the numbers beside it (same name,
    ``.json``); no run directory, checkpoint or existing file of a run is touched. Muon's ``linear_lr`` and
    ``bias_lr`` are scaled with ``lr`` by the same factor; a transfer recipe that freezes the backbone first is
    tested as its phase 1 (the head on the frozen backbone, at ``optim.lr``). Returns what the JSON holds."""
    out = Path(out)
    if out.suffix.lower() not in LR_FIND_FORMATS:
        raise UserError(f"lr-find --out {out}: expected a figure file ending in {', '.join(LR_FIND_FORMATS)}")
    settings = settings or LRFindSettings()
    setup = _set_up(recipe, adapt_recipe=True)  # the batch, optimiser and initial weights train would use
    recipe, info, model, task = setup.recipe, setup.info, setup.model, setup.task
    _say(f"data: {info['dataset']} ({info['sizes']['train']} training examples, {len(info['classes'])} classes)")
    initialise_model(model, setup.data, recipe, task)
    task.observe_training_data(setup.data)
    loader = setup.data.loaders(recipe, resolve_device(recipe.train.device))["train"]
    groups, in_eval = _first_phase(model, recipe)
    optim = recipe.optim
    _say_lr_find_notes(recipe, settings)
    result = find_lr(model, task, optim, recipe.train, loader, settings=settings, param_groups=groups,
                     in_eval=in_eval, say=_say)  # fmt: skip
    summary = _lr_find_summary(recipe, settings, result)
    i = result.suggestion_index
    plot_lr_find(result, out, title=f"lr-find: recipe {recipe.name} on {recipe.data.name} ({optim.name})")
    write_json(out.with_suffix(".json"), summary)
    if i is None:
        raise UserError(
            f"lr-find: the smoothed loss never fell below its first value between lr {settings.start_lr:g} and "
            f"{result.lrs[-1]:g}, so there is no lr to suggest; see {out} (check the data and labels, or raise "
            "--end-lr)"
        )
    return summary


def _say_lr_find_notes(recipe: Recipe, settings: LRFindSettings) -> None:
    optim = recipe.optim
    if optim.name == "muon":
        _say(f"note: muon: optim.linear_lr ({optim.linear_lr:g}) and optim.bias_lr ({optim.bias_lr:g}) are scaled "
             "with optim.lr by the same factor throughout; the lr shown is optim.lr (the filters')")  # fmt: skip
    if optim.scheduler != "none":
        _say(f"note: the {optim.scheduler} schedule is not used during the test (constant lr per step); "
             "the lr found is optim.lr, the schedule's peak")  # fmt: skip
    _say(f"lr-find: up to {settings.steps} steps of {optim.name} (batch {recipe.train.batch_size}), "
         f"lr {settings.start_lr:g} -> {settings.end_lr:g}")  # fmt: skip


def _lr_find_summary(recipe: Recipe, settings: LRFindSettings, result: Any) -> dict[str, Any]:
    """What ``lr-find``'s JSON holds: the settings, the curve, its minimum and the suggestion (or None)."""
    optim = recipe.optim
    scaled = ("lr", "linear_lr", "bias_lr") if optim.name == "muon" else ("lr",)
    lowest = result.minimum
    summary: dict[str, Any] = {
        "recipe": recipe.name,
        "data": recipe.data.name,
        "model": recipe.model.name,
        "optimizer": optim.name,
        "batch_size": recipe.train.batch_size,
        "rule": RULE,
        "start_lr": settings.start_lr,
        "end_lr": settings.end_lr,
        "steps": settings.steps,
        "steps_run": len(result.lrs),
        "stopped": result.stop_reason,
        "seconds": round(result.seconds, 2),
        "minimum": {"lr": result.lrs[lowest], "smoothed_loss": result.smoothed[lowest], "step": lowest},
        "suggestion": None,
        "lrs": result.lrs,
        "losses": result.losses,
        "smoothed": result.smoothed,
    }
    i = result.suggestion_index
    if i is not None:
        factor = result.lrs[i] / optim.lr
        found = {f"optim.{name}": float(f"{getattr(optim, name) * factor:.3g}") for name in scaled}
        flags = [f"--lr {found['optim.lr']:g}", *(f"--set {k}={v:g}" for k, v in found.items() if k != "optim.lr")]
        summary["suggestion"] = {"lr": result.lrs[i], "smoothed_loss": result.smoothed[i], "step": i,
                                 "settings": found, "flags": " ".join(flags)}  # fmt: skip
    return summary


def _first_phase(model: nn.Module, recipe: Recipe) -> tuple[list[Any] | None, list[nn.Module]]:
    """The param groups and eval-mode modules of the run's first phase (see :func:`train_in_phases`): a transfer
    recipe's frozen backbone, its discriminative lrs, its batch norms kept in eval."""
    transfer = recipe.transfer
    phase = plan_phases(transfer, recipe.train.epochs, None)[0]
    if phase.frozen:
        backbone = backbone_of(model)
        set_frozen(backbone, True)
        _say("note: transfer freezes the backbone first: the test trains the head on it, as phase 1 does")
        return [p for p in model.parameters() if p.requires_grad], [backbone]
    groups = None
    if transfer.layer_lr_decay < 1:
        groups = discriminative_groups(model, recipe.optim.lr, transfer.layer_lr_decay)
    norms = []
    if transfer.freeze_bn_stats:
        norms = [m for m in backbone_of(model).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return groups, norms


def initialise_model(model: nn.Module, data: Any, recipe: Recipe, task: Task) -> None:
    """A new run's starting weights: the layers fitted to the training data, then ``transfer.init``'s weights."""
    fit_layers_to_data(model, data, recipe.model.name)
    if recipe.transfer.init:  # after the fit: weights given for those layers too are the ones kept
        loaded = load_initial_weights(
            model, recipe.transfer.init, classes=data.info["classes"], from_models=task.init_from
        )
        _say(loaded.describe())
        _say_if_normalised_otherwise(recipe, data.info, loaded.normalization)


def _say_if_normalised_otherwise(recipe: Recipe, info: dict, expected: tuple[list[float], list[float]] | None) -> None:
    """A note when named pretrained weights meet images normalised otherwise than the ones they learnt from."""
    if expected is None or "mean" not in info:
        return
    given, wanted = [*info["mean"], *info["std"]], [*expected[0], *expected[1]]
    if len(given) == len(wanted) and all(abs(a - b) < 1e-3 for a, b in zip(given, wanted, strict=True)):
        return
    fix = "; the finetune recipe sets data.normalize = 'imagenet'" if recipe.data.normalize != "imagenet" else ""
    _say(f"note: {recipe.transfer.init}'s weights learnt from images normalised by mean {expected[0]} and std "
         f"{expected[1]}; this run normalises by mean {[round(v, 3) for v in info['mean']]} and std "
         f"{[round(v, 3) for v in info['std']]} (data.normalize = {recipe.data.normalize!r}){fix}")  # fmt: skip


def fit_layers_to_data(model: nn.Module, data: Any, model_name: str) -> None:
    """Fit the layers set from the training data rather than learnt (airbench's whitening), if the model has any."""
    if not any(isinstance(m, PatchWhitening) for m in model.modules()):
        return
    if not hasattr(data, "normalized_sample"):
        raise UserError(f"model {model_name!r} with stem = 'whiten' is fitted to training images; this data has none")
    sample = data.normalized_sample(WHITENING_FIT_IMAGES)
    fit_to_data(model, sample)
    _say(f"whitening layer fitted to the patches of {len(sample)} training images")


def default_run_dir(recipe: Recipe) -> Path:
    """``runs/RECIPE-TIME``, or ``runs/RECIPE-on-DATA-TIME`` for a recipe trained on other data than its own."""
    name = recipe.name
    if recipe.on_other_data:
        data = Path(recipe.data.name.partition(":")[2] or recipe.data.name).name.removesuffix(".tar.gz")
        name = f"{name}-on-{re.sub(r'[^A-Za-z0-9._-]+', '-', Path(data).stem or 'data')}"
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


# Below this many test images the accuracy's interval is wide (+-10 points or more) and the summary line says so.
SMALL_TEST_SPLIT = 100


def data_line(info: dict[str, Any], recipe: Recipe) -> str:
    """``data: NAME (N train / N valid / N test; C classes: ...; images CxHxW, how that size was chosen)``."""
    sizes, classes = info["sizes"], info["classes"]
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    images = ""
    if "image_size" in info:
        height, width = info["image_size"]
        how = (f"data.image_size, {recipe.data.resize}" if recipe.data.image_size
               else "the data's own size; data.image_size sets another")  # fmt: skip
        images = f"; images {info['channels']}x{height}x{width} ({how})"
    shared = info.get("boxes_in_shared_cells")
    if shared is not None:  # seed 002's rule: a cell holds one object; the largest box of a cell is learnt
        images += f"; {shared} training box(es) share a grid cell with a larger one and are not learnt"
    return (f"data: {info['dataset']} ({sizes['train']} train / {sizes['valid']} valid / {sizes['test']} test; "
            f"{len(classes)} class{'es' if len(classes) != 1 else ''}: {shown}{images})")  # fmt: skip


def read_run_recipe(run_dir: Path) -> Recipe:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"'{run_dir}' is not a run directory: {CONFIG_FILE} is missing")
    try:
        return recipe_from_dict(read_toml(path), source=str(path))
    except UserError as e:  # unreadable, or edited into values the recipe refuses
        raise UserError(f"{e}; {hint(path)}") from None


def build_task(recipe: Recipe, info: dict) -> Task:
    constructor = TASKS.get(recipe.task.name)
    classes, needed = info["classes"], constructor.min_classes  # weakseg localises even one class
    if len(classes) < needed:
        found = ", ".join(repr(name) for name in classes) or "none"
        raise UserError(
            f"data {info['dataset']!r} has {len(classes)} class ({found}): task {recipe.task.name!r} is a classifier "
            f"and needs {needed} or more classes; add a folder (or CSV label) of images per class"
        )
    return TASKS.create(recipe.task.name, recipe.task.options, num_classes=len(info["classes"]))


def build_model(recipe: Recipe, info: dict, modality: Modality, num_outputs: int | None = None) -> nn.Module:
    """The recipe's model for the data; ``num_outputs`` when the task's outputs are not the classes (task
    ``segment``: the background too)."""
    return create_model(
        recipe.model.name,
        num_classes=num_outputs or len(info["classes"]),
        inputs=modality.model_inputs(recipe, info),
        **recipe.model.options,
    )


def load_run(run_dir: str | Path, device: str = "auto") -> LoadedRun:
    run_dir = Path(run_dir)
    recipe = read_run_recipe(run_dir)
    info_path, weights = run_dir / RUN_FILE, run_dir / WEIGHTS_FILE
    if not info_path.is_file():
        raise UserError(f"run '{run_dir}' has no {RUN_FILE} (the data it was trained on): restore it from a copy, "
                        "or train the run again")  # fmt: skip
    if not weights.is_file():
        raise UserError(f"run '{run_dir}' has no trained model yet ({WEIGHTS_FILE} missing): did training finish? "
                        f"`convscope train --resume --out {run_dir}` writes it from the run's checkpoints")  # fmt: skip
    info = read_run_info(run_dir)
    try:  # the modality reads its own fields of run.json (image size, channels, vocabulary, ...)
        task = build_task(recipe, info)
        modality = get_modality(task.modality)
        model = build_model(recipe, info, modality, task.num_outputs)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise damaged(info_path, f"does not describe the run's data ({type(e).__name__}: {str(e)[:120]})") from None
    load_model_state(model, read_weights(weights), weights)
    resolved = resolve_device(device)
    model.to(resolved).eval()
    return LoadedRun(run_dir, recipe, info, model, task, modality, resolved)


def load_pretrained_run(spec: str, device: str = "auto") -> LoadedRun:
    """Pretrained ImageNet weights by name (``torchvision:resnet18``, ``timm:NAME``) as a run: their own class
    names and preprocessing (the shorter side resized, the centre crop, the weights' mean and std: said in a
    ``note:`` on stderr, so that ``predict --json`` stays JSON)."""
    pretrained = load_pretrained(spec)
    recipe = Recipe(name=spec, description=f"{pretrained.weights}, pretrained on ImageNet", model=NamedConfig(spec))
    # The images are brought to resize x resize (data.images.fit_size: shorter side, then centre crop) and then
    # centre-cropped: torchvision's Resize(resize) + CenterCrop(crop).
    crop = pretrained.crop if pretrained.crop < pretrained.resize else 0
    recipe.augment = AugmentConfig(center_crop=crop)
    task = build_task(recipe, pretrained.info)
    resolved = resolve_device(device)
    print(f"note: {pretrained.preprocessing()}", file=sys.stderr, flush=True)
    model = pretrained.build().to(resolved).eval()
    return LoadedRun(Path("."), recipe, pretrained.info, model, task, get_modality(task.modality), resolved)


def load_run_or_pretrained(source: str | Path, device: str = "auto") -> LoadedRun:
    """A run directory, or pretrained weights by name."""
    return load_pretrained_run(str(source), device) if is_pretrained_name(source) else load_run(source, device)


def inference_config(run: LoadedRun, *, batch_size: int | None = None, precision: str | None = None) -> InferenceConfig:
    """The fast path's settings for a run: its training precision and memory format unless overridden, and
    ``data.eval_batch_size`` unless ``batch_size`` is given."""
    recipe = run.recipe
    return InferenceConfig(
        precision=precision or recipe.train.precision,
        channels_last=recipe.train.channels_last,
        batch_size=recipe.data.eval_batch_size if batch_size is None else batch_size,
    )


def evaluate(
    run_dir: str | Path,
    *,
    data: str | None = None,
    skip_bad: bool = False,
    tta: bool = False,
    batch_size: int | None = None,
    precision: str | None = None,
) -> dict:
    """Detailed test metrics of a run, written to ``RUN_DIR/eval.json`` with confusion-matrix, ROC and
    precision-recall plots in ``RUN_DIR/plots``.

    Without ``data`` the run's own test split is used (the same images as at the end of training). ``tta``
    averages the predictions over five crops and their mirror images (see :mod:`convscope.models.tta`).
    The model runs on :mod:`convscope.serve.inference`'s fast path: batches of ``batch_size`` (default
    ``data.eval_batch_size``) in ``precision`` (default: the training precision), batch norms folded.
    """
    run = load_run(run_dir)
    config = inference_config(run, batch_size=batch_size, precision=precision)
    recipe, model = run.recipe, run.model
    if tta:
        recipe, model = _test_time_augmented(run)
    recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, eval_batch_size=config.batch_size))
    if data is None:
        loader = run.modality.prepare(recipe, skip_bad=skip_bad).loaders(recipe, run.device)["test"]
    else:
        loader = run.modality.evaluation_loader(recipe, run.info, data, run.device)
    model = prepare_model(model, config, run.device)
    metrics = run.task.make_metrics(detailed=True).to(run.device)
    if "confusion_matrix" not in metrics:
        raise UserError(f"run '{run.run_dir}' is a {run.task.name} run: its test figures are in summary.json and "
                        "segmentation.json; `convscope segment RUN_DIR IMAGE...` draws its masks")  # fmt: skip
    images = 0
    with torch.inference_mode(), autocast(run.device, config.precision):
        for batch in loader:
            run.task.validation_step(model, batch, metrics)
            images += run.task.batch_size(batch)
    values = {k: _to_cpu(v) for k, v in metrics.compute().items()}
    if run.task.modality == "boxes":
        result = detection_evaluation(run, values, data or recipe.data.name, images, config)
        write_json(run.run_dir / "eval.json", result)
        plot_detection(result, run.run_dir / "plots")
        return result
    result = _evaluation(run, values, data or recipe.data.name, config)
    if tta:
        result["tta"] = {"views": 10, "crop": list(model.size), "padding": model.padding}
    write_json(run.run_dir / "eval.json", result)
    plots = run.run_dir / "plots"
    plot_confusion_matrix(values["confusion_matrix"], run.classes, plots / "confusion_matrix.png")
    plot_roc(result["roc"], plots / "roc.png")
    plot_precision_recall(result["precision_recall"], plots / "precision_recall.png")
    return result


def _evaluation(run: LoadedRun, values: dict[str, Any], data: str, config: InferenceConfig) -> dict[str, Any]:
    """``eval.json``'s fields from the detailed metrics' ``values``."""
    confusion = values["confusion_matrix"]
    return {
        "run": str(run.run_dir),
        "data": data,
        "images": int(confusion.sum()),
        "inference": dataclasses.asdict(config),
        "loss": values["loss"].item(),
        "accuracy": values["accuracy"].item(),
        "accuracy_ci95": list(accuracy_interval(values["accuracy"].item(), int(confusion.sum()))),
        "error_rate": 1.0 - values["accuracy"].item(),
        **{k: v.item() for k, v in values.items() if k.startswith("top")},
        "per_class_accuracy": dict(zip(run.classes, values["per_class_accuracy"].tolist(), strict=True)),
        "classes": run.classes,
        "confusion_matrix": confusion.tolist(),
        **summarize_classification(values, run.classes),
    }


def _test_time_augmented(run: LoadedRun) -> tuple[Recipe, TestTimeAugmented]:
    """The run's recipe without its centre crop (the views are cropped from whole images) and the wrapped model."""
    if run.task.modality != "image":
        raise UserError(f"--tta averages image crops; run '{run.run_dir}' is a {run.task.modality} task")
    size, padding = tta_geometry(tuple(run.info["image_size"]), run.recipe.augment.center_crop)
    recipe = dataclasses.replace(run.recipe, augment=dataclasses.replace(run.recipe.augment, center_crop=0))
    return recipe, TestTimeAugmented(run.model, size, padding).eval()


def _to_cpu(value: Any) -> Any:
    """A metric's value (a tensor, or a curve's tuple of per-class tensors) on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    return type(value)(_to_cpu(v) for v in value)


# Up to this many classes, predict shows every one (the seed's table of p(F) for each name); beyond, the top 3.
PREDICT_ALL_CLASSES_UP_TO = 5


def predict(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    *,
    topk: int | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
) -> list[list[tuple[str, float]]]:
    """(class name, probability) for each raw input (an image file, a text), through the evaluation transform.

    Every class in class order when ``topk`` covers them all (by default: up to 5 classes), else the top
    ``topk`` (default 3) by probability. The inputs go through the model in batches on the fast path (see
    :func:`evaluate`). ``run_dir`` may also name pretrained weights (``torchvision:resnet18``): their ImageNet
    classes then.
    """
    run = load_run_or_pretrained(run_dir)
    if topk is not None and topk < 1:
        raise UserError(f"topk = {topk}: expected at least 1")
    config = inference_config(run, batch_size=batch_size, precision=precision)
    model = prepare_model(run.model, config, run.device)
    x = run.modality.load_inputs(run.recipe, run.info, [str(i) for i in inputs], torch.device("cpu"))
    probs = batched(lambda part: run.task.predict(model, part), x, config, run.device)
    k = topk or (len(run.classes) if len(run.classes) <= PREDICT_ALL_CLASSES_UP_TO else 3)
    if k >= len(run.classes):
        return [list(zip(run.classes, row.tolist(), strict=True)) for row in probs]
    values, indices = probs.topk(k, dim=1)
    return [
        [(run.classes[i], p) for i, p in zip(row_i.tolist(), row_p.tolist(), strict=True)]
        for row_i, row_p in zip(indices, values, strict=True)
    ]


def detect(
    run_dir: str | Path,
    images: Sequence[str | Path],
    *,
    out: str | Path | None = None,
    score_threshold: float | None = None,
    iou_threshold: float | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
) -> list[dict]:
    """Boxes of a detect run on image files: per image the detections (class, score, box in the file's pixels)
    with ``score_threshold`` (default: DISPLAY_SCORE) or more, after non-maximum suppression at ``iou_threshold``
    (default: the run's).
    With ``out``, each image with its boxes drawn and ``detections.json`` are written there."""
    run = load_run(run_dir)
    if run.task.modality != "boxes":
        raise UserError(f"run '{run.run_dir}' is a {run.task.name} run, not a detect run: `convscope predict` "
                        "gives its classes")  # fmt: skip
    run = dataclasses.replace(run, task=_thresholded(run, score_threshold, iou_threshold))
    config = inference_config(run, batch_size=batch_size, precision=precision)
    model = prepare_model(run.model, config, run.device)
    results = detect_images(run, model, [str(i) for i in images], config)
    if out is not None:
        write_detections(run, results, Path(out))
    return results


def is_detect_run(source: str | Path) -> bool:
    """Whether ``source`` is the directory of a detect run (read from its config.toml; no model is loaded)."""
    path = Path(source)
    return path.is_dir() and (path / "config.toml").is_file() and read_run_recipe(path).task.name == "detect"


def _thresholded(run: LoadedRun, score_threshold: float | None, iou_threshold: float | None) -> Task:
    """The run's detect task with other prediction thresholds (checked by the task as recipe options are)."""
    score = DISPLAY_SCORE if score_threshold is None else score_threshold
    options = {**run.recipe.task.options, "score_threshold": score}
    if iou_threshold is not None:
        options["iou_threshold"] = iou_threshold
    task = dataclasses.replace(run.recipe.task, options=options)
    return build_task(dataclasses.replace(run.recipe, task=task), run.info)


def explain(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    *,
    method: str | None = None,
    target: str | None = None,
    layer: str | None = None,
    out: str | Path | None = None,
    display: Display | None = None,
) -> Path:
    """Draw what the run's model looks at for each input into ``out`` (default ``RUN_DIR/explanations/``).

    Image runs: ``method`` is one of :func:`convscope.explain.methods.method_names`, ``target`` a class name or
    index (default: each input's predicted class), ``layer`` Grad-CAM's layer (default: the last convolution of
    the body, printed), ``display`` a :class:`convscope.explain.figures.Display`; see
    :func:`convscope.explain.images.explain_images`. Text runs: :func:`convscope.explain.text.explain_texts`.
    ``run_dir`` may also name pretrained weights (``torchvision:resnet18``; default ``out``: ``./explanations/``).
    """
    run = load_run_or_pretrained(run_dir)
    given = [str(i) for i in inputs]
    if run.task.modality == "boxes":
        raise UserError(f"run '{run.run_dir}' is a detect run: its outputs are boxes, not a score per class to "
                        "explain; `convscope detect RUN_DIR IMAGE...` draws them")  # fmt: skip
    if run.task.modality == "text":
        from convscope.explain.text import explain_texts

        out = Path(out) if out is not None else run.run_dir / "explanations" / "text.png"
        explain_texts(run, given, out)
        return out
    from convscope.explain.images import explain_images

    out = Path(out) if out is not None else run.run_dir / "explanations" / f"{method}.png"
    return explain_images(run, given, out, method=method, target=target, layer=layer, display=display)


def segment(run_dir: str | Path, images: Sequence[str | Path], *, out: str | Path | None = None) -> list[dict]:
    """Class masks of image files by a weakseg or segment run: per image ``NAME-mask.png`` (palette),
    ``NAME-overlay.png`` (seed 000's HSV) and the classes found with their share of pixels (also in
    ``segments.json``), written to ``out`` (default ``RUN_DIR/segments``). The thresholds are the ones chosen on
    the run's validation scenes."""
    run = load_run(run_dir)
    return segment_images(run, [str(i) for i in images], Path(out) if out is not None else run.run_dir / "segments")


def report(run_dir: str | Path, *, trust_images: int = 50) -> Path:
    """Evaluate the run and write ``RUN_DIR/report.html``: one self-contained page with its configuration,
    curves, metrics, mistakes, explanations and their trust figures (on ``trust_images`` test images)."""
    from convscope.report.run_report import write_report

    evaluation = evaluate(run_dir)
    return write_report(load_run(run_dir), evaluation, trust_images=trust_images)


def _note(message: str) -> None:
    _say(f"note: {message}")


def _say(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, flush=True)


def export_run(
    run_dir: str | Path, fmt: str, out: str | Path | None = None, *, examples: int = export.PARITY_EXAMPLES
) -> export.Export:
    """Write the run's model as ``fmt`` (``onnx`` or ``torchscript``) to ``out`` (default ``RUN_DIR/model.onnx``
    or ``RUN_DIR/model.torchscript.pt``) and compare its logits with the eager model's on test examples."""
    if fmt not in export.FORMATS:
        raise UserError(f"export format {fmt!r} is not one of: {', '.join(export.FORMATS)}")
    run = load_run(run_dir, device="cpu")
    path = Path(out) if out is not None else run.run_dir / export.FORMATS[fmt]
    if path.is_dir():
        raise UserError(f"--out '{path}' is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = run.model.float().eval()  # fp32, contiguous: the graph every runtime can take
    x = export.parity_inputs(run, examples)
    meta = export.metadata(run)
    # Two examples: a batch of one lets the exporters specialise the batch dimension.
    example = x[:2] if len(x) >= 2 else torch.cat([x, x])
    if fmt == "onnx":
        export.export_onnx(model, example, path, meta)
        exported = export.onnx_forward(path)
    else:
        export.export_torchscript(model, example, path, meta)
        exported = export.load_torchscript(path)
    config = InferenceConfig(fold_batchnorm=False, batch_size=128)
    device = torch.device("cpu")
    eager = batched(model, x, config, device)
    other = batched(exported, x, config, device)
    return export.Export(
        path=path,
        format=fmt,
        dataset=run.info["dataset"],
        examples=len(x),
        max_abs_difference=(eager - other).abs().max().item() if len(x) else 0.0,
        agreement=_agreement(run, model, eager, other) if len(x) else 1.0,
    )


def _agreement(run: LoadedRun, model: nn.Module, eager: torch.Tensor, other: torch.Tensor) -> float:
    """Share of examples the exported model decides alike: the same class, or for a detect run the same classes
    detected (scores from DISPLAY_SCORE) in the same order."""
    if run.task.modality != "boxes":
        return (eager.argmax(1) == other.argmax(1)).float().mean().item()
    size = tuple(run.info["image_size"])
    ours, theirs = run.task.decode(model, eager, size), run.task.decode(model, other, size)
    same = [torch.equal(a["labels"][a["scores"] >= DISPLAY_SCORE], b["labels"][b["scores"] >= DISPLAY_SCORE])
            for a, b in zip(ours, theirs, strict=True)]  # fmt: skip
    return sum(same) / len(same)
