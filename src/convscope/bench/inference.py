"""The inference benchmark (``convscope bench inference``): images per second of one trained model on its test
split, run three ways, with the accuracy of each.

- ``fp32_eager``: the model as trained, contiguous fp32, under ``torch.inference_mode`` (the usual baseline);
- ``convscope``: :mod:`convscope.serve.inference`'s fast path (batch norms folded, channels_last, bf16 autocast);
- ``onnxruntime``: the ``convscope export`` ONNX file in onnxruntime (fp32, its default graph optimisations).

Every system gets the same normalised test tensors already in memory, in batches of the same size, so the
figure is the model's forward pass (and the conversion to channels_last for the fast path), not data loading.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from convscope.bench.runs import write_result
from convscope.config import load_recipe
from convscope.serve.inference import InferenceConfig, batched, prepare_model

RECIPE = "fashion-mnist"
GOAL_SPEEDUP = 3.0
GOAL_POINTS = 0.001  # accuracy within +/- 0.1 point of fp32 eager
GOAL = ">= 3x the images/s of fp32 eager on the same model at the same accuracy (+/- 0.1 point)"
BATCH_SIZE = 512


def test_split(run) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's whole test split as model inputs (contiguous fp32) and labels, on the CPU."""
    loader = run.modality.prepare(run.recipe).loaders(run.recipe, torch.device("cpu"))["test"]
    xs, ys = zip(*((x.contiguous(), y) for x, y in loader), strict=True)
    return torch.cat(xs), torch.cat(ys)


def measure(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, config: InferenceConfig
) -> dict:
    """Images/s over the whole of ``x`` after a warm-up batch (oneDNN picks its kernels on the first call)."""
    device = torch.device("cpu")
    batched(forward, x[: config.batch_size], config, device)
    started = time.perf_counter()
    logits = batched(forward, x, config, device)
    seconds = time.perf_counter() - started
    return {
        "images_per_second": round(len(x) / seconds, 1),
        "seconds": round(seconds, 3),
        "accuracy": (logits.argmax(1) == y).float().mean().item(),
        "settings": dataclasses.asdict(config),
    }


def run_inference_study(
    *, out: Path | None, overrides: dict[str, str] | None, results_dir: Path, machine: dict, run_dir: Path | None
) -> dict:
    """Measure ``run_dir`` (default: train the fashion-mnist recipe with ``overrides`` first), print, write JSON."""
    from convscope import api
    from convscope.api import export_run
    from convscope.serve.export import onnx_forward

    overrides = overrides or {}
    if run_dir is None:
        run_dir = Path("runs") / f"bench-inference-{time.strftime('%Y%m%d-%H%M%S')}"
        api.train(load_recipe(RECIPE, overrides), out=run_dir)
    run = api.load_run(run_dir, device="cpu")
    x, y = test_split(run)
    eager = InferenceConfig(precision="fp32", channels_last=False, batch_size=BATCH_SIZE, fold_batchnorm=False)
    fast = InferenceConfig(precision="bf16", channels_last=True, batch_size=BATCH_SIZE, fold_batchnorm=True)
    systems = {
        "fp32_eager": measure(run.model.eval(), x, y, eager),
        "convscope": measure(prepare_model(run.model, fast, torch.device("cpu")), x, y, fast),
    }
    with tempfile.TemporaryDirectory() as folder:
        exported = export_run(run_dir, "onnx", Path(folder) / "model.onnx", examples=64)
        systems["onnxruntime"] = measure(onnx_forward(exported.path), x, y, eager)
    base = systems["fp32_eager"]
    for row in systems.values():
        row["speedup"] = round(row["images_per_second"] / base["images_per_second"], 2)
        row["accuracy_points"] = round(100 * (row["accuracy"] - base["accuracy"]), 2)
    ours = systems["convscope"]
    result = {
        "benchmark": "inference",
        "goal": GOAL,
        "run_dir": str(run_dir),
        "model": run.recipe.model.name,
        "dataset": run.info["dataset"],
        "test_images": len(y),
        "systems": systems,
        "reached": ours["speedup"] >= GOAL_SPEEDUP and abs(ours["accuracy"] - base["accuracy"]) <= GOAL_POINTS,
        "overrides": overrides,
    }
    path = write_result(result, "inference", overrides, machine, out, results_dir)
    print(f"{'system':<14}{'images/s':>10}{'speed-up':>10}{'accuracy':>10}")
    for name, row in systems.items():
        print(f"{name:<14}{row['images_per_second']:>10.0f}{row['speedup']:>9.2f}x{row['accuracy']:>10.4f}")
    print(f"inference: {GOAL}: {'reached' if result['reached'] else 'NOT reached'}; written {path}")
    return result
