"""Benchmarks: figures printed and written to ``benchmarks/results/<name>.json``, never asserted by a test.

Each benchmark trains a shipped recipe on the real data and records what the issue's figures ask for,
with the machine it ran on.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from convscope.config import load_recipe
from convscope.errors import UserError

RESULTS_DIR = Path("benchmarks") / "results"


@dataclass(frozen=True)
class Benchmark:
    recipe: str
    goal: str
    target_accuracy: float


BENCHMARKS = {
    "demo-fashion": Benchmark("fashion-mnist", ">= 92.0% test accuracy with <= 180 s of training", 0.92),
    "seed003-cifar": Benchmark("seed003-cifar-cnn", ">= 75% test accuracy (the seed's own figure)", 0.75),
    "seed004-selu": Benchmark("seed004-selu", "for scale: the seed's plain loop reached 78.8% in 73 s", 0.788),
    "cifar10": Benchmark("cifar10", "the fast CIFAR-10 recipe", 0.90),
}


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_benchmark(name: str, *, out: Path | None = None, overrides: dict[str, str] | None = None) -> dict:
    from convscope import api

    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; expected one of: {', '.join(BENCHMARKS)}")
    bench = BENCHMARKS[name]
    recipe = load_recipe(bench.recipe, overrides)
    run_dir = Path("runs") / f"bench-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    api.train(recipe, out=run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    result = {
        "benchmark": name,
        "recipe": bench.recipe,
        "overrides": overrides or {},
        "goal": bench.goal,
        "target_accuracy": bench.target_accuracy,
        "test_accuracy": summary["test_accuracy"],
        "reached": summary["test_accuracy"] >= bench.target_accuracy,
        "train_seconds": summary["train_seconds"],
        "epochs": summary["epochs"],
        "best_valid_accuracy": summary["best_valid_accuracy"],
        "run_dir": str(run_dir),
        "command": f"convscope bench {name}",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
    }
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{name}: test accuracy {result['test_accuracy']:.4f} (target {bench.target_accuracy:.3f}, "
        f"{'reached' if result['reached'] else 'NOT reached'}) in {result['train_seconds']:.1f} s of training; "
        f"written {path}"
    )
    return result
