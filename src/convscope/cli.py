"""The ``convscope`` command: parses arguments, calls :mod:`convscope.api`, turns user errors into ``error:`` lines."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

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
  convscope data import pets pets.tar.gz
"""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one ``error:`` line and exit status 2 like every other user error."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}")


def build_parser() -> Parser:
    parser = Parser(
        prog="convscope",
        description="Train convolutional networks, measure them honestly, show what they look at.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = commands.add_parser("train", help="train a recipe into a run directory")
    train.add_argument("--recipe", help="a shipped recipe name (see `convscope recipes`) or a .toml file")
    train.add_argument("--data", help="data set: fashion-mnist, cifar10, mnist:PATH, imagefolder:PATH, csv:PATH, ...")
    train.add_argument("--model", help="model name (see `convscope models`)")
    train.add_argument("--epochs", help="number of epochs")
    train.add_argument("--batch-size", help="training batch size")
    train.add_argument("--lr", help="learning rate (the peak for onecycle)")
    train.add_argument("--precision", help="fp32 or bf16 (autocast)")
    train.add_argument("--device", help="auto, cpu, cuda or mps")
    train.add_argument("--seed", help="random seed (split, shuffling, augmentation, initialisation)")
    train.add_argument("--out", help="run directory (default runs/<recipe>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    train.add_argument("--skip-bad", action="store_true", help="skip corrupt images and list them instead of stopping")
    train.add_argument("--quiet", action="store_true", help="no progress bar or step lines: one line per epoch")
    train.add_argument("--deterministic", action="store_true", help="deterministic algorithms (same seed, same run)")
    train.add_argument(
        "--nproc", type=int, help="data-parallel processes on this machine (torchrun); batch size is per process"
    )
    train.add_argument("--backend", default="auto", help="process group backend: auto (nccl on GPUs, else gloo), ...")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any recipe field, e.g. --set optim.lr=0.01 --set augment.hflip=true",
    )

    evaluate = commands.add_parser("evaluate", help="detailed test metrics of a run (writes RUN_DIR/eval.json)")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--data", help="another data set with the same classes (default: the run's test split)")
    evaluate.add_argument("--skip-bad", action="store_true")
    evaluate.add_argument("--tta", action="store_true", help="average 5 crops and their mirror images (images)")
    add_inference_flags(evaluate)

    predict = commands.add_parser("predict", help="class probabilities for image files or texts")
    predict.add_argument("run_dir")
    predict.add_argument("inputs", nargs="+", metavar="INPUT")
    predict.add_argument("--topk", type=int, help="classes shown per input (default: all up to 5 classes, else 3)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_inference_flags(predict)

    export = commands.add_parser("export", help="write a run's model as ONNX or TorchScript, with a parity check")
    export.add_argument("run_dir")
    export.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    export.add_argument("--out", help="the file (default RUN_DIR/model.onnx or RUN_DIR/model.torchscript.pt)")
    export.add_argument("--examples", type=int, default=256, help="test examples of the parity check (default 256)")

    explain = commands.add_parser("explain", help="what the model looks at: maps and overlays for inputs")
    explain.add_argument("run_dir")
    explain.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (texts for a text run)")
    explain.add_argument(
        "--method",
        help="guided-backprop, gradcam, integrated-gradients, saliency, attention (weakly supervised runs) or "
        "feature-maps",
    )
    explain.add_argument("--target", help="the class to explain, by name or index (default: the predicted class)")
    explain.add_argument("--layer", help="gradcam's layer, a module name (default: the last conv of the body)")
    explain.add_argument("--out", help="the figure's file (default RUN_DIR/explanations/METHOD.png)")
    explain.add_argument("--saturation", type=float, default=0.1, help="contrast of the map (seed 004: 0.1)")
    explain.add_argument("--brightness", type=float, default=0.5, help="how much of the map shows (seed 004: 0.5)")
    explain.add_argument("--alpha", type=float, default=0.75, help="opacity of the map over the image")

    segment = commands.add_parser(
        "segment", help="class masks of images by a weakly or fully supervised segmentation run"
    )
    segment.add_argument("run_dir")
    segment.add_argument("images", nargs="+", metavar="IMAGE")
    segment.add_argument("--out", help="folder for the masks, overlays and segments.json (default RUN_DIR/segments)")

    report = commands.add_parser("report", help="evaluate a run and write RUN_DIR/report.html")
    report.add_argument("run_dir")
    report.add_argument("--trust-images", type=int, default=50, help="test images for the trust figures")

    bench = commands.add_parser("bench", help="run a benchmark on the real data (writes benchmarks/results/NAME.json)")
    bench.add_argument("name", nargs="?", help="benchmark name; omit to list them")
    bench.add_argument("--out", help="write the JSON here instead")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    bench.add_argument(
        "--run-dir",
        help="transfer, weakseg: the study's folder, continued if it exists; inference: measure this trained run",
    )
    bench.add_argument(
        "--target", type=float, help="speed-*: the test accuracy to race to (default: the benchmark's own)"
    )

    commands.add_parser("recipes", help="list the shipped recipes")
    models = commands.add_parser("models", help="list the registered models, or one model's layers")
    models.add_argument("name", nargs="?", help="show this model's layers and output shapes")
    models.add_argument("--input-size", default="3,32,32", help="C,H,W of the images (default 3,32,32)")
    models.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")

    plot = commands.add_parser("plot", help="redraw the figures of a run directory")
    plot.add_argument("run_dir")

    data = commands.add_parser("data", help="list, import and describe data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    data_commands.add_parser("list", help="named and imported data sets")
    data_import = data_commands.add_parser("import", help="decode PATH into the cache under NAME")
    data_import.add_argument("name")
    data_import.add_argument("path")
    data_import.add_argument("--skip-bad", action="store_true")
    data_info = data_commands.add_parser("info", help="splits, classes and sizes of a data set")
    data_info.add_argument("name")
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
        recipe = api.load_recipe(args.recipe or "fashion-mnist", overrides_from_args(args))
    device = resolve_device(recipe.train.device)
    if args.nproc is not None:
        check_nproc(args.nproc, device)
        choose_backend(args.backend, device)
    if args.nproc is not None and args.nproc > 1:
        # Every worker must write to the same directory: fix the default name (it holds the time) here.
        out = Path(args.out) if args.out is not None else api.default_run_dir(recipe.name)
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
    print(f"{result['images']} test examples of {result['data']}")
    print(f"accuracy {result['accuracy']:.4f}  error rate {result['error_rate']:.4f}  loss {result['loss']:.4f}")
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


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def cmd_predict(args: argparse.Namespace) -> None:
    from convscope import api

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
        for name, goal in STUDIES.items():
            print(f"{name:<14} several runs: {goal}")
        return
    overrides = dict(item.partition("=")[::2] for item in args.set)
    run_benchmark(
        args.name,
        out=Path(args.out) if args.out else None,
        overrides=overrides,
        run_dir=Path(args.run_dir) if args.run_dir else None,
        target=args.target,
    )


def cmd_export(args: argparse.Namespace) -> None:
    from convscope.export import export_run

    if args.examples < 1:
        raise UserError(f"--examples {args.examples}: expected a positive number of test examples")
    if args.format == "torchscript":
        print("note: PyTorch deprecates TorchScript (torch.jit); ONNX is the portable format", file=sys.stderr)
    result = export_run(args.run_dir, args.format, args.out, examples=args.examples)
    print(result.describe())


def cmd_recipes(_: argparse.Namespace) -> None:
    from convscope.config import list_recipes

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
        print(json.dumps(catalog.dataset_info(args.name), indent=2))


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "explain": cmd_explain,
    "segment": cmd_segment,
    "report": cmd_report,
    "bench": cmd_bench,
    "export": cmd_export,
    "recipes": cmd_recipes,
    "models": cmd_models,
    "plot": cmd_plot,
    "data": cmd_data,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        COMMANDS[args.command](args)
    except UserError as exc:
        from convscope.distributed import report_error

        if not report_error(str(exc)):  # a launched worker leaves the one error line to its launcher
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from convscope.distributed import report_crash

        if report_crash(exc):
            return 1
        raise
    except KeyboardInterrupt:
        print("error: interrupted; a run continues with `convscope train --resume --out RUN_DIR`", file=sys.stderr)
        return 130
    return 0
