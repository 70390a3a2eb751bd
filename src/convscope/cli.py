"""The ``convscope`` command: parses arguments, calls :mod:`convscope.api`, turns user errors into ``error:`` lines."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from convscope import __version__
from convscope.errors import UserError

EXAMPLES = """examples:
  convscope train --recipe fashion-mnist
  convscope train --recipe cifar10 --epochs 5 --out runs/c10
  convscope train --recipe runs/c10/config.toml --set optim.lr=0.002 --set augment.hflip=true
  convscope train --resume --out runs/c10
  convscope evaluate runs/c10
  convscope predict runs/c10 cat.jpg dog.png --topk 3
  convscope predict runs/names maria clara tuco_salamanca
  convscope explain runs/c10 cat.jpg --method gradcam --target cat --out cat-gradcam.png
  convscope report runs/c10
  convscope export runs/c10 --format onnx
  convscope segment runs/scenes scene.png --out masks/
  convscope detect runs/boxes scene.png --out boxes/
  convscope data import pets pets.tar.gz
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Epilogs kept as written (the examples), and ``(default: X)`` after each option that has a real default.

    An option whose default is None says in its own help what None means (``default: the recipe's``), so no
    ``(default: None)``; nor is it added to on/off flags, empty lists, or help that already names its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or isinstance(default, bool) or default == [] or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def examples(*commands: str) -> str:
    """A subcommand's epilog: ``examples:`` and one to three real command lines (tests/test_cli_help.py runs
    each through the parser)."""
    return "examples:\n" + "".join(f"  {command}\n" for command in commands)


RUN_OR_WEIGHTS = "a run directory, or pretrained ImageNet weights by name: torchvision:resnet18, timm:NAME"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one ``error:`` line and exit status 2 like every other user error.

    Every parser, the subcommands' too (``add_subparsers(parser_class=Parser)``), shows defaults and examples.
    """

    def __init__(self, *args: Any, formatter_class: type[argparse.HelpFormatter] = HelpFormatter, **kwargs: Any):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}")


def add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train a recipe into a run directory",
        epilog=examples(
            "convscope train --recipe cifar10 --epochs 5 --out runs/c10",
            "convscope train --data imagefolder:photos --set augment.hflip=true --set train.early_stopping=patience",
            "convscope train --recipe cifar10 --set optim.lr=0.002 --print-config",
        ),
    )
    train.add_argument(
        "--recipe",
        help="a shipped recipe name (see `convscope recipes`) or a .toml file (default: classify for --data of images, "
        "spanish-names for texts, fashion-mnist without --data)",
    )
    train.add_argument(
        "--data",
        help="data set: fashion-mnist, cifar10, mnist:PATH, imagefolder:PATH, csv:PATH, boxes in yolo:PATH or "
        "coco:PATH, ... (default: the recipe's data.name)",
    )
    train.add_argument("--model", help="model name, see `convscope models` (default: the recipe's model.name)")
    train.add_argument("--epochs", help="number of epochs (default: the recipe's train.epochs)")
    train.add_argument("--batch-size", help="training batch size (default: the recipe's train.batch_size)")
    train.add_argument("--lr", help="learning rate, the peak for onecycle (default: the recipe's optim.lr)")
    train.add_argument("--precision", help="fp32 or bf16 (autocast) (default: the recipe's train.precision)")
    train.add_argument("--device", help="auto, cpu, cuda or mps (default: the recipe's train.device)")
    train.add_argument(
        "--seed", help="random seed: split, shuffling, augmentation, initialisation (default: the recipe's train.seed)"
    )
    add_run_flags(train)


def add_run_flags(train: argparse.ArgumentParser) -> None:
    """``train``'s flags about the run rather than the recipe: where it goes, resuming, output, processes."""
    train.add_argument("--out", help="run directory (default: runs/<recipe>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    train.add_argument("--skip-bad", action="store_true", help="skip corrupt images and list them instead of stopping")
    train.add_argument("--quiet", action="store_true", help="no progress bar or step lines: one line per epoch")
    train.add_argument("--deterministic", action="store_true", help="deterministic algorithms (same seed, same run)")
    train.add_argument(
        "--nproc",
        type=int,
        help="data-parallel processes on this machine (torchrun); batch size is per process (default: one process, "
        "no launcher)",
    )
    train.add_argument("--backend", default="auto", help="process group backend: auto (nccl on GPUs, else gloo), ...")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any recipe field, e.g. --set optim.lr=0.01 --set augment.hflip=true (`convscope recipes --keys` "
        "lists them)",
    )
    train.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved recipe as TOML (what config.toml would hold) and train nothing",
    )


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="detailed test metrics of a run (writes RUN_DIR/eval.json)",
        epilog=examples("convscope evaluate runs/c10", "convscope evaluate runs/pets --data imagefolder:photos --tta"),
    )
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--data", help="another data set with the same classes (default: the run's test split)")
    evaluate.add_argument("--skip-bad", action="store_true", help="skip corrupt images instead of stopping")
    evaluate.add_argument("--tta", action="store_true", help="average 5 crops and their mirror images (images)")
    add_inference_flags(evaluate)


def add_predict(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="class probabilities for image files or texts",
        epilog=examples(
            "convscope predict runs/c10 cat.jpg dog.png --topk 3",
            "convscope predict runs/names maria clara tuco_salamanca --json",
            "convscope predict torchvision:alexnet photo.jpg --topk 12",
        ),
    )
    predict.add_argument("run_dir", help=RUN_OR_WEIGHTS)
    predict.add_argument("inputs", nargs="+", metavar="INPUT")
    predict.add_argument("--topk", type=int, help="classes shown per input (default: all up to 5 classes, else 3)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_inference_flags(predict)


def add_export(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="write a run's model as ONNX or TorchScript, with a parity check",
        epilog=examples(
            "convscope export runs/c10 --format onnx",
            "convscope export runs/c10 --format torchscript --out c10.pt --examples 64",
        ),
    )
    export.add_argument("run_dir")
    export.add_argument("--format", required=True, choices=["onnx", "torchscript"], help="the file format (required)")
    export.add_argument("--out", help="the file (default: RUN_DIR/model.onnx or RUN_DIR/model.torchscript.pt)")
    export.add_argument("--examples", type=int, default=256, help="test examples of the parity check")


def add_explain(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser(
        "explain",
        help="what the model looks at: maps and overlays for inputs",
        epilog=examples(
            "convscope explain runs/c10 cat.jpg --method gradcam --target cat --out cat-gradcam.png",
            "convscope explain runs/c10 cat.jpg dog.png --method integrated-gradients",
            "convscope explain torchvision:resnet18 photo.jpg --method gradcam",
        ),
    )
    explain.add_argument("run_dir", help=RUN_OR_WEIGHTS)
    explain.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (texts for a text run)")
    explain.add_argument(
        "--method",
        help="guided-backprop, gradcam, integrated-gradients, saliency, attention (weakly supervised runs) or "
        "feature-maps (no default: image runs require one)",
    )
    explain.add_argument("--target", help="the class to explain, by name or index (default: the predicted class)")
    explain.add_argument("--layer", help="gradcam's layer, a module name (default: the last conv of the body)")
    explain.add_argument("--out", help="the figure's file (default: RUN_DIR/explanations/METHOD.png; "
                         "./explanations/ for named weights)")  # fmt: skip
    explain.add_argument("--saturation", type=float, default=0.1, help="contrast of the map (seed 004's value)")
    explain.add_argument("--brightness", type=float, default=0.5, help="how much of the map shows (seed 004's value)")
    explain.add_argument("--alpha", type=float, default=0.75, help="opacity of the map over the image")


def add_segment(commands: argparse._SubParsersAction) -> None:
    segment = commands.add_parser(
        "segment",
        help="class masks of images by a weakly or fully supervised segmentation run",
        epilog=examples("convscope segment runs/scenes scene.png --out masks/"),
    )
    segment.add_argument("run_dir")
    segment.add_argument("images", nargs="+", metavar="IMAGE")
    segment.add_argument("--out", help="folder for the masks, overlays and segments.json (default: RUN_DIR/segments)")


def add_detect(commands: argparse._SubParsersAction) -> None:
    detect = commands.add_parser(
        "detect",
        help="boxes of a detect run on image files: drawn images and detections.json",
        epilog=examples(
            "convscope detect runs/scenes scene.png --out boxes/",
            "convscope detect runs/shop photos/*.jpg --score-threshold 0.5 --iou-threshold 0.5",
        ),
    )
    detect.add_argument("run_dir")
    detect.add_argument("images", nargs="+", metavar="IMAGE")
    detect.add_argument("--out", help="folder for the drawn images and detections.json (default: RUN_DIR/detections)")
    detect.add_argument(
        "--score-threshold", type=float, help="show boxes with this score or more (default: 0.25, as Ultralytics)"
    )
    detect.add_argument(
        "--iou-threshold",
        type=float,
        help="non-maximum suppression: of two boxes of one class overlapping by more than this IoU, the lower "
        "scored is dropped (not the IoU at which mAP counts a box right) (default: the run's task.iou_threshold)",
    )
    detect.add_argument("--json", action="store_true", help="print the detections as JSON instead of a table")
    add_inference_flags(detect)


def add_report(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report",
        help="evaluate a run and write RUN_DIR/report.html",
        epilog=examples("convscope report runs/c10", "convscope report runs/pets --trust-images 20"),
    )
    report.add_argument("run_dir")
    report.add_argument("--trust-images", type=int, default=50, help="test images for the trust figures")


def add_bench(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench",
        help="run a benchmark on the real data (writes benchmarks/results/NAME.json)",
        epilog=examples("convscope bench", "convscope bench fashion-mnist --set train.epochs=2 --out /tmp/fm.json"),
    )
    bench.add_argument("name", nargs="?", help="benchmark name; omit to list them")
    bench.add_argument("--out", help="write the JSON here (default: benchmarks/results/NAME.json)")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    bench.add_argument(
        "--run-dir",
        help="transfer, weakseg, detect: the study's folder, continued if it exists; inference: measure this "
        "trained run (default: a new runs/bench-NAME-<time>)",
    )
    bench.add_argument(
        "--target", type=float, help="speed-*, race-*: the test accuracy to race to (default: the benchmark's own)"
    )
    bench.add_argument("--repeat", type=int, help="race-*: repetitions of each system, alternating (default: 2)")


def add_recipes(commands: argparse._SubParsersAction) -> None:
    recipes = commands.add_parser(
        "recipes",
        help="list the shipped recipes, or every key a recipe can set",
        epilog=examples("convscope recipes", "convscope recipes --keys", "convscope recipes --keys --recipe cifar10"),
    )
    recipes.add_argument("--keys", action="store_true", help="list every settable key: type, default, what it does")
    recipes.add_argument(
        "--recipe", help="with --keys: also the options of this recipe's task and model (default: say how to see them)"
    )


def add_models(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser(
        "models",
        help="list the registered models, or one model's layers",
        epilog=examples("convscope models", "convscope models resnet18 --input-size 3,64,64 --classes 3"),
    )
    models.add_argument("name", nargs="?", help="show this model's layers and output shapes")
    models.add_argument("--input-size", default="3,32,32", help="C,H,W of the images")
    models.add_argument("--classes", type=int, default=10, help="number of classes")


def add_plot(commands: argparse._SubParsersAction) -> None:
    plot = commands.add_parser(
        "plot", help="redraw the figures of a run directory", epilog=examples("convscope plot runs/c10")
    )
    plot.add_argument("run_dir")


def add_data(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser(
        "data",
        help="list, import and describe data sets",
        epilog=examples("convscope data list", "convscope data import pets pets.tar.gz", "convscope data info pets"),
    )
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    data_commands.add_parser("list", help="named and imported data sets", epilog=examples("convscope data list"))
    data_import = data_commands.add_parser(
        "import",
        help="decode PATH into the cache under NAME",
        epilog=examples("convscope data import pets pets.tar.gz", "convscope data import photos ~/photos --skip-bad"),
    )
    data_import.add_argument("name")
    data_import.add_argument("path")
    data_import.add_argument("--skip-bad", action="store_true", help="skip corrupt images and list them")
    data_info = data_commands.add_parser(
        "info",
        help="splits, classes and sizes of a data set",
        epilog=examples("convscope data info pets", "convscope data info imagefolder:photos"),
    )
    data_info.add_argument("name")


def add_lr_find(commands: argparse._SubParsersAction) -> None:
    lr_find = commands.add_parser(
        "lr-find",
        help="learning-rate range test: loss against an exponentially growing lr, a plot and a suggested lr",
        description="The learning-rate range test (Smith 2015; fastai's lr_find, Lightning's Tuner.lr_find) on the "
        "model `train` would start from: up to --steps mini-batches of the recipe's optimiser at a constant lr per "
        "step growing exponentially from --start-lr to --end-lr (the schedule unused), stopped once the smoothed "
        "loss passes 4x its best. Suggests the lr of the steepest descent of the smoothed loss, never past its "
        "minimum. Writes no run: only the figure and its JSON.",
        epilog=examples(
            "convscope lr-find --recipe fashion-mnist",
            "convscope lr-find --recipe cifar10 --data imagefolder:photos --steps 60 --out photos-lr.png",
            "convscope lr-find --recipe fashion-mnist --batch-size 256 --end-lr 1",
        ),
    )
    lr_find.add_argument("--recipe", help="a shipped recipe name or a .toml file (default: as for train)")
    lr_find.add_argument("--data", help="data set, as for train (default: the recipe's data.name)")
    lr_find.add_argument("--model", help="model name (default: the recipe's model.name)")
    lr_find.add_argument("--batch-size", help="training batch size (default: the recipe's train.batch_size)")
    lr_find.add_argument("--device", help="auto, cpu, cuda or mps (default: the recipe's train.device)")
    lr_find.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set any recipe field")
    lr_find.add_argument("--steps", type=int, default=100, help="mini-batches at most (fewer once the loss diverges)")
    lr_find.add_argument("--start-lr", type=float, default=1e-7, help="lr of the first step")
    lr_find.add_argument("--end-lr", type=float, default=10.0, help="lr of the last step")
    lr_find.add_argument("--out", default="lr_find.png", help="the figure (.png, .svg or .pdf), the JSON beside it")


def build_parser() -> Parser:
    parser = Parser(
        prog="convscope",
        description="Train convolutional networks, measure them honestly, show what they look at.",
        epilog=EXAMPLES,
    )
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add_command, _ in COMMANDS.values():
        add_command(commands)
    return parser


def add_inference_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--batch-size", type=int, help="examples per forward pass (default data.eval_batch_size)")
    command.add_argument("--precision", choices=["fp32", "bf16"], help="default: the run's training precision")


_TRAIN_FLAGS = {
    "data": "data.name",
    "model": "model.name",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "optim.lr",
    "precision": "train.precision",
    "device": "train.device",
    "seed": "train.seed",
}


def overrides_from_args(args: argparse.Namespace) -> dict[str, str]:
    overrides = {key: getattr(args, flag) for flag, key in _TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    if args.skip_bad:
        overrides["data.skip_bad"] = "true"
    if args.quiet:
        overrides["train.quiet"] = "true"
    if args.deterministic:
        overrides["train.deterministic"] = "true"
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
        overrides[key.strip()] = value.strip()
    return overrides


def default_recipe(args: argparse.Namespace) -> str:
    """``--recipe``, else the default for the data given: ``classify`` for images, ``spanish-names`` (the character
    CNN) for texts, ``fashion-mnist`` (the demo) without data; a note names the choice."""
    if args.recipe:
        return args.recipe
    data = args.data or next((item.partition("=")[2].strip().strip("'\"") for item in args.set
                              if item.partition("=")[0].strip() == "data.name"), None)  # fmt: skip
    if data is None:
        return "fashion-mnist"
    kind = data.split(":")[0]
    name, what = DEFAULT_RECIPES.get(kind, ("classify", "image classification"))
    print(f"note: no --recipe: training {data} with the default {what} recipe {name!r} (`convscope recipes` lists "
          "the others)", flush=True)  # fmt: skip
    return name


# The recipe `train --data KIND:...` uses without --recipe, by the data's kind (images: classify).
DEFAULT_RECIPES = {
    "textcsv": ("spanish-names", "text classification"),
    "spanish-names": ("spanish-names", "text classification"),
    "yolo": ("detect", "object detection"),
    "coco": ("detect", "object detection"),
}


def cmd_train(args: argparse.Namespace) -> None:
    from convscope import api
    from convscope.distributed import check_nproc, choose_backend, launch, process_group
    from convscope.engine.optim import resolve_device

    if args.resume:
        if args.out is None:
            raise UserError("--resume needs --out RUN_DIR: the run to continue")
        given = [f"--{k.replace('_', '-')}" for k in (*_TRAIN_FLAGS, "recipe") if getattr(args, k) is not None]
        if given or args.set:
            raise UserError(f"--resume continues the run with its saved recipe; drop {', '.join(given) or '--set'}")
        recipe = api.read_run_recipe(Path(args.out))
    else:
        # With --print-config stdout is the TOML alone (to pipe into a file): the notes go to stderr.
        with contextlib.redirect_stdout(sys.stderr if args.print_config else sys.stdout):
            recipe = api.load_recipe(default_recipe(args), overrides_from_args(args))
    if args.print_config:
        from convscope.config import to_toml

        print(to_toml(recipe.to_dict()), end="")  # what the run's config.toml would hold
        return
    device = resolve_device(recipe.train.device)
    if args.nproc is not None:
        check_nproc(args.nproc, device)
        choose_backend(args.backend, device)
    if args.nproc is not None and args.nproc > 1:
        # Every worker must write to the same directory: fix the default name (it holds the time) here.
        out = Path(args.out) if args.out is not None else api.default_run_dir(recipe)
        launch(args.nproc, [*_without_nproc(args.argv), *(["--out", str(out)] if args.out is None else [])],
               run_dir=out)  # fmt: skip
        return
    with process_group(args.backend, device):
        api.train(recipe, out=args.out, resume=args.resume)


def _without_nproc(argv: Sequence[str]) -> list[str]:
    """The command line minus ``--nproc N`` / ``--nproc=N``: what each launched worker runs."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            kept.append(item)
    return kept


def cmd_evaluate(args: argparse.Namespace) -> None:
    from convscope import api

    result = api.evaluate(args.run_dir, data=args.data, skip_bad=args.skip_bad, tta=args.tta,
                          batch_size=args.batch_size, precision=args.precision)  # fmt: skip
    if "map50" in result:
        _print_detection_evaluation(result, Path(args.run_dir))
        return
    print(f"{result['images']} test examples of {result['data']}")
    low, high = result["accuracy_ci95"]
    small = "; a small test set" if result["images"] < api.SMALL_TEST_SPLIT else ""
    print(f"accuracy {result['accuracy']:.4f} (95% interval {low:.3f}-{high:.3f}{small})  error rate "
          f"{result['error_rate']:.4f}  loss {result['loss']:.4f}")  # fmt: skip
    print(f"balanced error rate {_number(result['balanced_error_rate'])}  ROC AUC ({result['roc']['kind']}) "
          f"{_number(result['roc'].get('binary_auc', result['roc']['auc_macro']))}  mean AP "
          f"{_number(result['precision_recall']['mean_average_precision'])}")  # fmt: skip
    for key in result:
        if key.startswith("top"):
            print(f"{key.replace('_', ' ')} {result[key]:.4f}")
    width = max(len(c) for c in result["classes"])
    print(f"  {'class':<{width}}  accuracy  TP rate  FP rate  ROC AUC      AP")
    for name in result["classes"]:
        values = (
            result["per_class_accuracy"][name],
            result["true_positive_rate"][name],
            result["false_positive_rate"][name],
            result["roc"]["auc"][name],
            result["precision_recall"]["average_precision"][name],
        )
        print(f"  {name:<{width}}  " + "  ".join(f"{_number(v):>7}" for v in values))
    plots = Path(args.run_dir) / "plots"
    print(f"written: {Path(args.run_dir) / 'eval.json'}, {plots}/confusion_matrix.png, roc.png, precision_recall.png")


def _print_detection_evaluation(result: dict, run_dir: Path) -> None:
    print(f"{result['images']} test images of {result['data']}, {result['boxes']} true boxes")
    print(f"mAP@0.5 {result['map50']:.4f}  mAP@[.5:.95] {result['map50_95']:.4f}  mAP@0.75 {result['map75']:.4f}  "
          f"loss {result['loss']:.4f}")  # fmt: skip
    width = max(len(c) for c in result["per_class_ap"])
    print(f"  {'class':<{width}}   AP@0.5  AP@[.5:.95]")
    for name, values in result["per_class_ap"].items():
        print(f"  {name:<{width}}  {_number(values['ap50']):>7}  {_number(values['ap50_95']):>11}")
    plots = run_dir / "plots"
    print(f"written: {run_dir / 'eval.json'}, {plots}/confusion_matrix.png, precision_recall.png")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def cmd_predict(args: argparse.Namespace) -> None:
    from convscope import api

    if api.is_detect_run(args.run_dir):  # its predictions are boxes: `convscope detect` without the files
        boxes = api.detect(args.run_dir, args.inputs, batch_size=args.batch_size, precision=args.precision)
        _print_detections(boxes, as_json=args.json)
        return
    results = api.predict(args.run_dir, args.inputs, topk=args.topk, batch_size=args.batch_size,
                          precision=args.precision)  # fmt: skip
    if args.json:
        print(
            json.dumps(
                [
                    {"input": i, "top": [{"class": c, "p": p} for c, p in r]}
                    for i, r in zip(args.inputs, results, strict=True)
                ],
                indent=2,
            )
        )
        return
    width = max(len(i) for i in args.inputs)
    for name, top in zip(args.inputs, results, strict=True):
        print(f"{name:<{width}}  " + "  ".join(f"{c}: {p:.3f}" for c, p in top))


def cmd_detect(args: argparse.Namespace) -> None:
    from convscope import api

    out = Path(args.out) if args.out is not None else Path(args.run_dir) / "detections"
    results = api.detect(args.run_dir, args.images, out=out, score_threshold=args.score_threshold,
                         iou_threshold=args.iou_threshold, batch_size=args.batch_size,
                         precision=args.precision)  # fmt: skip
    _print_detections(results, as_json=args.json)
    if not args.json:
        print(f"written: {out / 'detections.json'} and {len(results)} drawn image(s) in {out}")


def _print_detections(results: list[dict], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        found = result["detections"]
        print(f"{result['image']}: {len(found)} box(es)")
        for d in found:
            x0, y0, x1, y1 = d["box"]
            print(f"  {d['class']}  {d['score']:.3f}  x {x0:.0f}-{x1:.0f}  y {y0:.0f}-{y1:.0f}")


def cmd_explain(args: argparse.Namespace) -> None:
    from convscope import api
    from convscope.explain.figures import Display

    display = Display(saturation=args.saturation, brightness=args.brightness, alpha=args.alpha)
    api.explain(args.run_dir, args.inputs, method=args.method, target=args.target, layer=args.layer, out=args.out,
                display=display)  # fmt: skip


def cmd_segment(args: argparse.Namespace) -> None:
    from convscope import api

    for row in api.segment(args.run_dir, args.images, out=args.out):
        found = ", ".join(f"{c['class']} {100 * c['share']:.1f}%" for c in row["classes"])
        print(f"{row['image']}: {found}")
        print(f"  written: {row['mask']}, {row['overlay']}")


def cmd_report(args: argparse.Namespace) -> None:
    from convscope import api

    if args.trust_images < 1:
        raise UserError(f"--trust-images {args.trust_images}: expected a positive number of images")
    print(f"written: {api.report(args.run_dir, trust_images=args.trust_images)}")


def cmd_bench(args: argparse.Namespace) -> None:
    from convscope.bench import BENCHMARKS, STUDIES, run_benchmark

    if args.name is None:
        for name, bench in BENCHMARKS.items():
            print(f"{name:<14} recipe {bench.recipe}: {bench.goal}")
        for name, study in STUDIES.items():
            print(f"{name:<14} several runs: {study.goal}")
        return
    overrides = dict(item.partition("=")[::2] for item in args.set)
    run_benchmark(
        args.name,
        out=Path(args.out) if args.out else None,
        overrides=overrides,
        run_dir=Path(args.run_dir) if args.run_dir else None,
        target=args.target,
        repeat=args.repeat,
    )


def cmd_export(args: argparse.Namespace) -> None:
    from convscope.api import export_run

    if args.examples < 1:
        raise UserError(f"--examples {args.examples}: expected a positive number of test examples")
    if args.format == "torchscript":
        print("note: PyTorch deprecates TorchScript (torch.jit); ONNX is the portable format", file=sys.stderr)
    result = export_run(args.run_dir, args.format, args.out, examples=args.examples)
    print(result.describe())


def cmd_recipes(args: argparse.Namespace) -> None:
    from convscope.config import list_recipes, load_recipe

    if args.keys:
        from convscope.recipe_keys import describe_keys

        recipe = load_recipe(args.recipe) if args.recipe is not None else None
        print(describe_keys(recipe, args.recipe or ""), end="")
        return
    if args.recipe is not None:
        raise UserError("recipes --recipe R goes with --keys: `convscope recipes --keys --recipe R`")
    rows = list_recipes()
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")


def cmd_models(args: argparse.Namespace) -> None:
    from convscope.models.summary import layer_summary, parameter_table, parse_input_size

    size = parse_input_size(args.input_size)
    if args.name:
        print(layer_summary(args.name, size, args.classes))
        return
    print(f"parameters for {args.classes} classes and {size[0]}x{size[1]}x{size[2]} images:")
    for name, count in parameter_table(size, args.classes):
        print(f"  {name:<14} {count}")


def cmd_plot(args: argparse.Namespace) -> None:
    from convscope.report.plots import plot_run

    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.csv").is_file():
        raise UserError(f"'{run_dir}' has no metrics.csv: not a run directory, or no step finished yet")
    for path in plot_run(run_dir):
        print(path)


def cmd_data(args: argparse.Namespace) -> None:
    from convscope.data import catalog

    if args.data_command == "list":
        for row in catalog.list_datasets():
            state = "cached" if row["cached"] else ("available" if row["available"] else "not available")
            print(f"{row['name']:<16} {state:<14} {row['spec']}")
    elif args.data_command == "import":
        dataset = catalog.import_dataset(args.name, args.path, skip_bad=args.skip_bad)
        sizes = ", ".join(f"{len(s)} {name}" for name, s in dataset.splits.items())
        print(f"imported {args.name!r}: {sizes} images, {len(dataset.classes)} classes")
        if dataset.skipped:
            print(f"skipped {len(dataset.skipped)} unreadable files: " + ", ".join(dataset.skipped))
    else:
        from convscope.data.modalities.boxes import box_dataset_info, is_box_spec

        info = box_dataset_info(args.name) if is_box_spec(args.name) else catalog.dataset_info(args.name)
        print(json.dumps(info, indent=2))


def cmd_lr_find(args: argparse.Namespace) -> None:
    from convscope import api
    from convscope.engine.lr_find import RULE, LRFindSettings

    # The train flags lr-find does not take count as not given.
    given = {**dict.fromkeys(_TRAIN_FLAGS), "skip_bad": False, "quiet": False, "deterministic": False, **vars(args)}
    recipe = api.load_recipe(default_recipe(args), overrides_from_args(argparse.Namespace(**given)))
    settings = LRFindSettings(start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps)
    result = api.lr_find(recipe, out=args.out, settings=settings)
    if result["stopped"]:
        print(f"stopped after {result['steps_run']} steps: {result['stopped']}")
    suggestion = result["suggestion"]
    print(f"written: {args.out}, {Path(args.out).with_suffix('.json')} ({result['seconds']:.1f} s)")
    print(f"suggested lr: {suggestion['settings']['optim.lr']:g} ({RULE}); set it with {suggestion['flags']}")


# Each command: the function that adds its parser (in `--help` order) and the one that runs it.
COMMANDS: dict[str, tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], None]]] = {
    "train": (add_train, cmd_train),
    "evaluate": (add_evaluate, cmd_evaluate),
    "predict": (add_predict, cmd_predict),
    "export": (add_export, cmd_export),
    "explain": (add_explain, cmd_explain),
    "segment": (add_segment, cmd_segment),
    "detect": (add_detect, cmd_detect),
    "report": (add_report, cmd_report),
    "bench": (add_bench, cmd_bench),
    "recipes": (add_recipes, cmd_recipes),
    "models": (add_models, cmd_models),
    "plot": (add_plot, cmd_plot),
    "data": (add_data, cmd_data),
    "lr-find": (add_lr_find, cmd_lr_find),
}


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler's time limit, ``docker stop``), raised where SIGINT raises
    KeyboardInterrupt: the same unwinding (a checkpoint write in progress removes its temporary file, the last
    checkpoint stays intact) and the same one line, with the exit status of the signal."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM like SIGINT while a command runs (the main thread only, where Python runs handlers). A worker
    started by ``--nproc`` keeps the default: its launcher ends it with SIGTERM and reports the cause itself."""
    from convscope.distributed import ERROR_DIR_ENV

    if threading.current_thread() is not threading.main_thread() or os.environ.get(ERROR_DIR_ENV):
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(exc: KeyboardInterrupt, args: argparse.Namespace | None) -> int:
    """The one line for a stopped command, and the exit status of its signal (128 + number, as a shell says)."""
    signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
    what = "stopped by SIGTERM" if signum == signal.SIGTERM else "interrupted"
    if args is not None and args.command == "train":
        run = getattr(args, "out", None) or "RUN_DIR"
        what += f"; the last checkpoint stays valid: continue with `convscope train --resume --out {run}`"
    print(f"error: {what}", file=sys.stderr)
    return 128 + signum


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = None
    try:
        with _sigterm_as_interrupt():
            args = build_parser().parse_args(argv)
            args.argv = argv
            COMMANDS[args.command][1](args)
    except UserError as exc:
        from convscope.distributed import report_error

        # One line, whatever the message quotes (tarfile's reasons come one per line).
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        if not report_error(message):  # a launched worker leaves the one error line to its launcher
            print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:
        from convscope.distributed import report_crash

        if report_crash(exc):
            return 1
        raise
    except KeyboardInterrupt as exc:
        return _stopped(exc, args)
    return 0
