"""The speed benchmarks (``convscope bench speed-fashion``, ``speed-cifar10``): the same network, data and schedule
trained by a seed-style plain loop, PyTorch Lightning, a bare loop over convscope's tensors, and convscope, in
one run on one machine; each system in its own process so its peak memory is its own.

Per system: seconds to the target test accuracy, final accuracy, training images/s, peak resident memory, and
the fraction of the machine's matmul peak (measured in the same run, fp32 and bf16) that training reaches:
3 x forward FLOPs per image x images/s / the peak of the system's precision.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from convscope.bench.runs import run_in_process, write_result
from convscope.bench.speed_systems import SYSTEMS, prepare, seconds_to_target
from convscope.errors import UserError


@dataclass(frozen=True)
class SpeedBenchmark:
    recipe: str
    target: float


# Targets every system must be able to reach on the recipe's schedule, or the figure is a null rather than a time:
# fashion-mnist reaches 93.3-93.5% in its 3 epochs; cifar10's is set below the 89.7% of its 6 epochs (both on
# one draw of this 2-core machine, benchmarks/README.md).
SPEED_BENCHMARKS = {
    "speed-fashion": SpeedBenchmark("fashion-mnist", 0.93),
    "speed-cifar10": SpeedBenchmark("cifar10", 0.85),
}
GOAL = (
    "convscope's seconds to target <= 0.5x the plain loop's and <= 0.7x Lightning's; engine overhead (convscope "
    "against a bare loop over the same tensors and network) within 5%"
)


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """Measured peak of an n x n matmul in ``dtype`` on this machine, GFLOP/s (best of ``repeats``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up: first calls pick kernels
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def forward_flops_per_image(recipe_name: str, overrides: dict[str, str]) -> float:
    """FLOPs of one forward pass of the benchmark's network on one image (torch's FLOP counter)."""
    setup = prepare(recipe_name, overrides)
    x = torch.zeros(2, setup.data.train.channels, *setup.data.train.image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        setup.model.eval()(x)
    return counter.get_total_flops() / 2


def _run_in_process(system: str, recipe: str, overrides: dict[str, str]) -> dict:
    entry = "import sys; from convscope.bench.speed_systems import main; main(sys.argv[1:])"
    return run_in_process(entry, [system, recipe, json.dumps(overrides)], f"speed benchmark, system {system!r}")


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a / b, 3)


def run_speed_study(
    name: str,
    *,
    out: Path | None,
    overrides: dict[str, str] | None,
    results_dir: Path,
    machine: dict,
    systems: tuple[str, ...] = SYSTEMS,
    target: float | None = None,
) -> dict:
    """``target`` replaces the benchmark's own (a schedule shortened by ``--set train.epochs=N`` needs a lower one)."""
    if target is not None and not 0 < target <= 1:
        raise UserError(f"--target {target}: expected a test accuracy in (0, 1]")
    bench = SPEED_BENCHMARKS[name]
    if target is not None:
        bench = SpeedBenchmark(bench.recipe, target)
    overrides = overrides or {}
    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    print(f"matmul peak (2048x2048): {peaks['fp32']:.0f} GFLOP/s fp32, {peaks['bf16']:.0f} GFLOP/s bf16")
    train_flops = 3 * forward_flops_per_image(bench.recipe, overrides)  # forward + backward (2x forward)
    results: dict[str, dict] = {}
    for system in systems:
        print(f"--- {system}", flush=True)
        result = _run_in_process(system, bench.recipe, overrides)
        result["seconds_to_target"] = seconds_to_target(result["curve"], bench.target)
        achieved = train_flops * result["images_per_second"]
        result["flops_fraction"] = round(achieved / (peaks[result["precision"]] * 1e9), 4)
        results[system] = result

    def time_of(system: str) -> float | None:
        return results.get(system, {}).get("seconds_to_target")

    figures = {
        "convscope_vs_plain": ratio(time_of("convscope"), time_of("plain")),
        "convscope_vs_lightning": ratio(time_of("convscope"), time_of("lightning")),
    }
    if "bare" in results and "convscope" in results:
        # Same computation (a test checks the two train identically): any difference in rate is the engine's.
        bare_rate, engine_rate = results["bare"]["images_per_second"], results["convscope"]["images_per_second"]
        figures["engine_overhead"] = round(bare_rate / engine_rate - 1, 4)
    reached = {
        "vs_plain": figures["convscope_vs_plain"] is not None and figures["convscope_vs_plain"] <= 0.5,
        "vs_lightning": figures["convscope_vs_lightning"] is not None and figures["convscope_vs_lightning"] <= 0.7,
        "engine_overhead": figures.get("engine_overhead") is not None and figures["engine_overhead"] <= 0.05,
    }
    result = {
        "benchmark": name,
        "goal": GOAL,
        "recipe": bench.recipe,
        "target": bench.target,
        **results,
        "figures": figures,
        "reached": reached,
        "matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "train_flops_per_image": train_flops,
        "overrides": overrides,
    }
    path = write_result(result, name, overrides, machine, out, results_dir, target=target)
    print(f"{'system':<11}{'s to target':>12}{'final acc':>10}{'img/s':>9}{'peak MB':>9}{'of peak':>9}")
    for system, row in results.items():
        to_target = row["seconds_to_target"]
        print(f"{system:<11}{'-' if to_target is None else f'{to_target:.1f}':>12}{row['final_accuracy']:>10.4f}"
              f"{row['images_per_second']:>9.0f}{row['peak_rss_mb']:>9.0f}{row['flops_fraction']:>9.1%}")  # fmt: skip
    print(f"target {bench.target}; " + ", ".join(f"{k} {v}" for k, v in figures.items()) + f"; written {path}")
    return result
