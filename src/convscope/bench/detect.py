"""The detection benchmark (``convscope bench detect``): convscope's detector, seed 002's YOLO loss and Ultralytics'
YOLO11n, each trained on the same FashionScenes training scenes for the same wall-clock budget on the same machine,
and each scored by the same code (:func:`score`: torchmetrics' mean average precision, faster_coco_eval backend) on
its boxes for the same test scenes.

Systems (``--set bench.systems=a,b`` runs some of them):

- ``convscope``: the ``fashion-scenes-detect`` recipe (the anchor-free ``fastdet``); ``convscope_yolov1``: the
  ``fashion-scenes-yolov1`` recipe (seed 002's grid and loss). A convscope run's schedule (one cycle) needs its
  length beforehand, so each recipe is first timed for one epoch and then trained for as many epochs as fit the
  budget (``--set train.epochs=N`` sets them instead); the table reports the time it took.
- ``ultralytics``: :mod:`convscope.bench.detect_peer`, with the training scenes written out in Ultralytics' layout
  (the same validation fraction held out as convscope's recipe holds out).

The one-shot study (seed 002: a network trained to classify carries localisation; the box regression need not be
class-specific), on the ``convscope`` recipe for the epochs its budget gave: from scratch, from a ``fashion-mnist``
classification run (``transfer.init``) with the body frozen throughout or fine-tuned with everything else, and with
class-agnostic against class-specific box regression.

Study settings are ``--set bench.KEY=VALUE``: ``bench.budget`` (seconds of training per system, default 300),
``bench.systems``, ``bench.one_shot`` (true/false); every other ``--set`` goes to the convscope detection recipes
(``data.name`` to every system: the peer gets the same scenes). Runs are kept under ``--run-dir`` (default
``runs/bench-detect-<time>``) and a restarted study continues them.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convscope.bench.runs import timed_run, write_result
from convscope.config import load_recipe, parse_value
from convscope.data.boxes import scene_boxes
from convscope.data.scenes import open_scenes, parse_scene_spec
from convscope.errors import UserError
from convscope.run import read_json

DETECT_RECIPE = "fashion-scenes-detect"
YOLOV1_RECIPE = "fashion-scenes-yolov1"
CLASSIFIER_RECIPE = "fashion-mnist"
SYSTEMS = ("convscope", "convscope_yolov1", "ultralytics")
RECIPES = {"convscope": DETECT_RECIPE, "convscope_yolov1": YOLOV1_RECIPE}
DEFAULT_BUDGET = 300.0
INFERENCE_BATCH = 500  # test images per forward pass, the same for every system
AGNOSTIC_OPTION = "class_agnostic"  # the fastdet option: one box per location shared by the classes
GOAL_MAP50, GOAL_YOLOV1_MAP50 = 0.95, 0.85
GOAL = (
    "convscope: mAP@[.5:.95] above Ultralytics YOLO11n's in the same training time and mAP@0.5 >= 0.95; seed 002's "
    "YOLO loss: mAP@0.5 >= 0.85 (FashionScenes test scenes, 2 CPU cores); the one-shot study's figures"
)


@dataclass(frozen=True)
class StudyOptions:
    budget: float = DEFAULT_BUDGET  # seconds of training per system
    systems: tuple[str, ...] = SYSTEMS
    one_shot: bool = True


def study_options(overrides: dict[str, str]) -> tuple[StudyOptions, dict[str, str]]:
    """The ``bench.*`` keys of ``overrides``, checked, and the rest (the recipes' overrides)."""
    options, rest = StudyOptions(), {}
    for key, raw in overrides.items():
        if not key.startswith("bench."):
            rest[key] = raw
        elif key == "bench.budget":
            value = parse_value(raw)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise UserError(f"bench.budget = {raw!r}: expected a positive number of seconds of training per system")
            options = StudyOptions(float(value), options.systems, options.one_shot)
        elif key == "bench.systems":
            systems = tuple(name.strip() for name in raw.split(",") if name.strip())
            unknown = [name for name in systems if name not in SYSTEMS]
            if not systems or unknown:
                raise UserError(f"bench.systems = {raw!r}: expected a comma-separated list of {', '.join(SYSTEMS)}")
            options = StudyOptions(options.budget, systems, options.one_shot)
        elif key == "bench.one_shot":
            value = parse_value(raw)
            if not isinstance(value, bool):
                raise UserError(f"bench.one_shot = {raw!r}: expected true or false")
            options = StudyOptions(options.budget, options.systems, value)
        else:
            raise UserError(f"{key}: not a setting of the detect benchmark; expected bench.budget, bench.systems or "
                            "bench.one_shot")  # fmt: skip
    return options, rest


def score(predictions: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """The one scorer of every system: mAP@0.5 and mAP@[.5:.95] of ``predictions`` (per image: boxes xyxy pixels,
    scores, labels) against ``targets`` (boxes, labels)."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval")
    metric.update(predictions, targets)
    values = metric.compute()
    return {"map50": round(float(values["map_50"]), 4), "map50_95": round(float(values["map"]), 4)}


@dataclass
class SystemRun:
    """What a system gives the study: its boxes for the test scenes and its figures (seconds, images per second)."""

    predictions: list[dict[str, torch.Tensor]]
    figures: dict[str, Any]


def predict_run(run_dir: Path, images: torch.Tensor) -> tuple[list[dict[str, torch.Tensor]], float]:
    """A trained detect run's boxes for ``images`` (uint8 N x C x H x W, the run's size) on the fast inference path,
    and the seconds it took (normalisation, forward passes, decoding and NMS)."""
    from torchvision.transforms.v2 import Normalize

    from convscope import api
    from convscope.serve.inference import autocast, chunks, model_input, prepare_model

    run = api.load_run(run_dir)
    config = api.inference_config(run, batch_size=INFERENCE_BATCH)
    model = prepare_model(run.model, config, run.device)
    normalize = Normalize(run.info["mean"], run.info["std"])

    def detect(part: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        x = model_input(normalize(part.float().div(255)), config, run.device)
        # The folded copy runs the network; the task decodes with the run's own model, whose attributes (grid,
        # stride) the traced copy does not keep.
        found = run.task.decode(run.model, model(x), tuple(x.shape[-2:]))
        return [{"boxes": f["boxes"].float().cpu(), "scores": f["scores"].float().cpu(),
                 "labels": f["labels"].long().cpu()} for f in found]  # fmt: skip

    predictions: list[dict[str, torch.Tensor]] = []
    with torch.inference_mode(), autocast(run.device, config.precision):
        detect(images[: config.batch_size])  # untimed warm-up, as the peer's
        started = time.perf_counter()
        for part in chunks(images, config.batch_size):
            predictions += detect(part)
    return predictions, time.perf_counter() - started


def budget_epochs(recipe_name: str, overrides: dict[str, str], budget: float, calibration: Path) -> int:
    """How many epochs of the recipe fit ``budget`` seconds: one epoch is timed (``calibration``, kept on a
    restart), the rest assumed as fast. ``train.epochs`` in ``overrides`` wins."""
    if "train.epochs" in overrides:
        return load_recipe(recipe_name, overrides).train.epochs
    summary, _ = timed_run(recipe_name, {**overrides, "train.epochs": "1"}, calibration)
    return max(1, int(budget // summary["train_seconds"]))


def convscope_system(
    recipe_name: str, overrides: dict[str, str], root: Path, name: str, budget: float, test_images: torch.Tensor
) -> SystemRun:
    """Train ``recipe_name`` for ``budget`` seconds' worth of epochs under ``root/name`` and predict the test scenes."""
    epochs = budget_epochs(recipe_name, overrides, budget, root / f"{name}-calibration")
    return convscope_run(recipe_name, {**overrides, "train.epochs": str(epochs)}, root / name, test_images)


def convscope_run(recipe_name: str, overrides: dict[str, str], run_dir: Path, test_images: torch.Tensor) -> SystemRun:
    """One convscope run (kept if finished) and its boxes for the test scenes."""
    summary, wall = timed_run(recipe_name, overrides, run_dir)
    predictions, inference_seconds = predict_run(run_dir, test_images)
    train_images = read_json(run_dir / "run.json")["sizes"]["train"]
    seconds = summary["train_seconds"]
    figures = {
        "seconds": seconds,
        "wall_seconds": None if wall is None else round(wall, 1),
        "epochs": summary["epochs"],
        "train_images_per_second": round(summary["epochs"] * train_images / seconds, 1),
        "inference_images_per_second": round(len(test_images) / inference_seconds, 1),
        "run_dir": str(run_dir),
    }
    return SystemRun(predictions, figures)


def peer_folder(train_spec: str, valid_fraction: float, folder: Path) -> Path:
    """The training scenes of ``train_spec`` in Ultralytics' layout under ``folder`` (kept if written before):
    ``valid_fraction`` of them, drawn with a fixed seed, as its validation split. Returns the data.yaml."""
    from convscope.data.sources.yolo import write_yolo

    existing = folder / "data.yaml"
    if existing.is_file():
        return existing
    train = scene_boxes(open_scenes(train_spec)["train"])
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    held = max(1, round(valid_fraction * len(train)))
    return write_yolo({"train": train.subset(order[held:]), "val": train.subset(order[:held])}, folder)


def ultralytics_system(
    spec: str, valid_fraction: float, root: Path, budget: float, test_images: torch.Tensor
) -> SystemRun:
    from convscope.bench.detect_peer import run_peer

    data_yaml = peer_folder(spec, valid_fraction, root / "yolo-data")
    result = run_peer(data_yaml, test_images, budget, root / "ultralytics", INFERENCE_BATCH)
    return SystemRun(result.predictions, {**result.figures, "run_dir": str(root / "ultralytics")})


def agnostic_default(recipe_name: str, overrides: dict[str, str]) -> bool | None:
    """Whether the recipe's model regresses one box shared by the classes (None: its model has no such option)."""
    from convscope.models import MODELS

    recipe = load_recipe(recipe_name, overrides)
    if AGNOSTIC_OPTION in recipe.model.options:
        return bool(recipe.model.options[AGNOSTIC_OPTION])
    parameter = inspect.signature(MODELS.get(recipe.model.name)).parameters.get(AGNOSTIC_OPTION)
    return None if parameter is None else bool(parameter.default)


def classifier_overrides(overrides: dict[str, str]) -> dict[str, str]:
    """The classification run whose body the detector can load: the fashion-mnist recipe (fastnet-small, whose
    widths are fastdet's own) with the detectors' 3x3 conv stem (the recipe's whitening stem is a pixel smaller and
    shifts the body's layers), and the detector's widths when its recipe sets others."""
    widths = load_recipe(DETECT_RECIPE, overrides).model.options.get("widths")
    stem = {"model.stem": '"conv"'}
    return stem if widths is None else {**stem, "model.name": "fastnet", "model.widths": str(list(widths))}


def one_shot_study(
    overrides: dict[str, str], root: Path, budget: float, test_images: torch.Tensor, targets: list[dict]
) -> dict:
    """Scratch / frozen / fine-tuned from a classification run, and class-agnostic / class-specific regression,
    all on the convscope recipe for the same epochs."""
    epochs = budget_epochs(DETECT_RECIPE, overrides, budget, root / "convscope-calibration")
    common = {**overrides, "train.epochs": str(epochs)}
    classifier, classifier_wall = timed_run(CLASSIFIER_RECIPE, classifier_overrides(overrides), root / "classifier")
    init = str(root / "classifier")
    variants = {
        "scratch": ({}, root / "convscope"),
        # Frozen for every epoch (one phase at the recipe's lr), or one phase with everything training: only the
        # initialisation differs from scratch.
        "frozen": ({"transfer.init": init, "transfer.freeze_epochs": str(epochs)}, root / "one-shot-frozen"),
        "fine_tuned": (
            {"transfer.init": init, "transfer.freeze_epochs": "0", "transfer.unfreeze_at": "0"},
            root / "one-shot-fine-tuned",
        ),
    }
    agnostic = agnostic_default(DETECT_RECIPE, overrides)
    if agnostic is not None:
        other = "class_specific" if agnostic else "class_agnostic"
        variants[other] = ({f"model.{AGNOSTIC_OPTION}": str(not agnostic).lower()}, root / f"one-shot-{other}")
    runs = {}
    for variant, (keys, run_dir) in variants.items():
        run = convscope_run(DETECT_RECIPE, {**common, **keys}, run_dir, test_images)
        runs[variant] = {**score(run.predictions, targets), **run.figures}
    if agnostic is not None:
        runs["class_agnostic" if agnostic else "class_specific"] = {**runs["scratch"], "same_run_as": "scratch"}
    return {
        "epochs": epochs,
        "recipe": DETECT_RECIPE,
        "recipe_class_agnostic": agnostic,
        "classifier": {
            "recipe": CLASSIFIER_RECIPE,
            "test_accuracy": classifier["test_accuracy"],
            "train_seconds": classifier["train_seconds"],
            "wall_seconds": None if classifier_wall is None else round(classifier_wall, 1),
            "run_dir": init,
        },
        "runs": runs,
    }


def _reached(systems: dict[str, dict]) -> dict[str, bool | None]:
    """The issue's figures; None where a system was not run."""
    convscope, yolov1, peer = (systems.get(name) for name in SYSTEMS)
    above = None if convscope is None or peer is None else convscope["map50_95"] > peer["map50_95"]
    return {
        "convscope_map50_95_above_ultralytics": above,
        "convscope_map50": None if convscope is None else convscope["map50"] >= GOAL_MAP50,
        "yolov1_map50": None if yolov1 is None else yolov1["map50"] >= GOAL_YOLOV1_MAP50,
    }


def _print(result: dict, path: Path) -> None:
    print(f"{'system':<18}{'mAP@.5':>8}{'mAP@.5:.95':>12}{'train s':>9}{'epochs':>8}{'train img/s':>13}"
          f"{'infer img/s':>13}")  # fmt: skip
    for name, row in result["systems"].items():
        print(f"{name:<18}{row['map50']:>8.4f}{row['map50_95']:>12.4f}{row['seconds']:>9.1f}{row['epochs']:>8}"
              f"{row['train_images_per_second']:>13.0f}{row['inference_images_per_second']:>13.0f}")  # fmt: skip
    one_shot = result.get("one_shot")
    if one_shot is not None:
        classifier = one_shot["classifier"]
        print(f"one shot ({one_shot['recipe']}, {one_shot['epochs']} epochs each; body from a {classifier['recipe']} "
              f"run at {classifier['test_accuracy']:.4f} test accuracy):")  # fmt: skip
        for name, row in one_shot["runs"].items():
            same = f"  (= {row['same_run_as']})" if "same_run_as" in row else ""
            print(f"  {name:<16}{row['map50']:>8.4f}{row['map50_95']:>12.4f}{row['seconds']:>9.1f}{same}")
    reached = ", ".join(f"{key} {'-' if value is None else value}" for key, value in result["reached"].items())
    print(f"budget {result['budget_seconds']:.0f} s per system; {reached}; written {path}")


def run_detect_study(
    *,
    out: Path | None,
    overrides: dict[str, str] | None,
    results_dir: Path,
    machine: dict,
    run_dir: Path | None = None,
) -> dict:
    """Train the systems under ``run_dir`` (default ``runs/bench-detect-<time>/``; an existing one is continued),
    score them on the test scenes, print the table, write the JSON."""
    overrides = dict(overrides or {})
    options, recipe_overrides = study_options(overrides)
    recipe = load_recipe(DETECT_RECIPE, recipe_overrides)  # checks the recipes' overrides before any training
    spec = recipe.data.name
    if parse_scene_spec(spec) is None:
        raise UserError(f"data.name = {spec!r}: the detect benchmark runs on fashion-scenes[:TRAIN,TEST]")
    root = run_dir or Path("runs") / f"bench-detect-{time.strftime('%Y%m%d-%H%M%S')}"
    test = scene_boxes(open_scenes(spec)["test"])
    targets = [test.targets(i) for i in range(len(test))]
    systems = {}
    for name in options.systems:
        print(f"--- {name}", flush=True)
        if name == "ultralytics":
            run = ultralytics_system(spec, recipe.data.valid_fraction, root, options.budget, test.images)
        else:
            run = convscope_system(RECIPES[name], recipe_overrides, root, name, options.budget, test.images)
        systems[name] = {**score(run.predictions, targets), **run.figures}
    result: dict[str, Any] = {
        "benchmark": "detect",
        "goal": GOAL,
        "budget_seconds": options.budget,
        "data": spec,
        "test_scenes": len(test),
        "scorer": "torchmetrics MeanAveragePrecision (faster_coco_eval backend, xyxy boxes, bbox IoU)",
        "systems": systems,
        "reached": _reached(systems),
        "recipes": [RECIPES[name] for name in options.systems if name in RECIPES],
    }
    if options.one_shot:
        print("--- one shot", flush=True)
        result["one_shot"] = one_shot_study(recipe_overrides, root, options.budget, test.images, targets)
    path = write_result(result, "detect", overrides, machine, out, results_dir, run_dir=root)
    _print(result, path)
    return result
