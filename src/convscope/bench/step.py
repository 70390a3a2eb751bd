"""``convscope bench step``: the training step of each recipe's network, lever by lever, against today's step.

The reference, ``bare``, is the step the engine runs today and the speed harness's ``bare`` system times: eager,
bf16 autocast, channels_last, the recipe's optimiser as torch builds it (``foreach``). Each other lever changes one
thing: fp32, contiguous memory, one thread, half or twice the batch, the optimiser's ``fused`` or for-loop
implementation, ``torch.compile`` (inductor) with and without max-autotune, and data parallelism: the same batch
split over two processes of one thread each on two cores (DDP over gloo, as ``convscope train --nproc 2`` runs,
but with the global batch kept). A lever's figure is its images/s on
the recipe's real training batches, its ratio to ``bare`` measured in the same round, and the share of the
measured matmul peak of its precision that it reaches (training FLOPs per image x images/s / peak). Compiling costs
a warm-up (its first steps), reported beside the rate: it counts in time-to-accuracy.

Rounds interleave the levers (bare, fp32, ..., bare, fp32, ...) so that the machine's drift falls on all of them
alike; the medians over rounds are the figures. ``torch.profiler``'s table of the bare step's most expensive
operators says where its time goes.
"""

from __future__ import annotations

import copy
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from convscope.bench.race import training_flops_per_image
from convscope.bench.runs import write_result
from convscope.bench.speed import matmul_peak_gflops
from convscope.bench.speed_systems import Setup, prepare
from convscope.distributed import cpu_cores
from convscope.engine.optim import build_optimizer
from convscope.errors import UserError

GOAL = "the training step of each recipe's network, per lever, against today's eager bf16 step (bare)"
RECIPES = ("fashion-mnist", "cifar10")
WARMUP_STEPS = 3  # the first steps: kernel choice, and for compile its compilation
TIMED_IMAGES = 10_000  # per measurement, whatever the batch: enough steps for a stable rate at a small batch
ROUNDS = 2
PROFILED_STEPS = 3
PROFILE_ROWS = 12


@dataclass(frozen=True)
class Lever:
    name: str
    precision: str = "bf16"
    channels_last: bool = True
    compile_mode: str | None = None  # torch.compile's mode ("default", "max-autotune"); None: eager
    batch_factor: float = 1.0
    threads: int | None = None  # torch.set_num_threads; None: as the process has it
    optimizer_impl: str = "foreach"  # foreach (torch's default on CPU tensors), fused, for-loop
    processes: int = 1  # > 1: the batch split over this many DDP processes, the cores shared out among them


LEVERS = (
    Lever("bare"),
    Lever("fp32", precision="fp32"),
    Lever("contiguous", channels_last=False),
    Lever("one-thread", threads=1),
    Lever("batch-half", batch_factor=0.5),
    Lever("batch-double", batch_factor=2.0),
    Lever("fused-optimizer", optimizer_impl="fused"),
    Lever("for-loop-optimizer", optimizer_impl="for-loop"),
    Lever("compile", compile_mode="default"),
    Lever("compile-max-autotune", compile_mode="max-autotune"),
    Lever("two-processes", processes=2),
)


def _optimizer(setup: Setup, model: nn.Module, impl: str) -> torch.optim.Optimizer | None:
    """The recipe's optimiser for ``model`` in implementation ``impl``; None where torch's optimiser has no such
    implementation (convscope's Muon is its own loop)."""
    optimizer = build_optimizer(setup.recipe.optim, model.parameters())
    if impl == "foreach":
        return optimizer
    if not isinstance(optimizer, torch.optim.SGD | torch.optim.Adam | torch.optim.AdamW):
        return None
    flags = {"fused": True} if impl == "fused" else {"foreach": False}
    return type(optimizer)(model.parameters(), **{**optimizer.defaults, **flags})


def _batches(setup: Setup, batch_size: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` training batches of ``batch_size`` from the recipe's loader (real images, augmented as
    the recipe augments), cycled when the data holds fewer."""
    recipe = replace(setup.recipe, train=replace(setup.recipe.train, batch_size=batch_size))
    loader = setup.data.loaders(recipe, torch.device("cpu"))["train"]
    batches = []
    while len(batches) < count:
        for x, y in loader:
            batches.append((x, y))
            if len(batches) == count:
                break
    return batches


def _step_fn(lever: Lever, model: nn.Module, optimizer: torch.optim.Optimizer, smoothing: float) -> Callable:
    forward = torch.compile(model, mode=lever.compile_mode) if lever.compile_mode else model
    bf16 = lever.precision == "bf16"

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x).float(), y, label_smoothing=smoothing)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _time_steps(step: Callable, batches: list, steps: int, threads: int | None) -> tuple[float, float]:
    """Seconds of the warm-up steps (all batches but the last), then of ``steps`` steps on the last batch."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        for x, y in batches[:-1]:
            step(x, y)
        warmup = time.perf_counter() - started
        x, y = batches[-1]
        started = time.perf_counter()
        for _ in range(steps):
            step(x, y)
        return warmup, time.perf_counter() - started
    finally:
        torch.set_num_threads(before)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _data_parallel_worker(rank: int, lever: Lever, port: int, model: nn.Module, optim: Any, smoothing: float,
                          batches: list, steps: int, queue: Any) -> None:  # fmt: skip
    """One of ``lever.processes`` ranks: its share of each batch, gradients averaged by DDP during backward."""
    world = lever.processes
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        memory_format = torch.channels_last if lever.channels_last else torch.contiguous_format
        model = model.train().to(memory_format=memory_format)
        wrapped = DistributedDataParallel(model)
        optimizer = build_optimizer(optim, model.parameters())
        share = [(x.chunk(world)[rank].contiguous(memory_format=memory_format), y.chunk(world)[rank])
                 for x, y in batches]  # fmt: skip
        step = _step_fn(lever, wrapped, optimizer, smoothing)
        threads = max(1, cpu_cores() // world)
        dist.barrier()
        warmup, seconds = _time_steps(step, share, steps, threads)
        dist.barrier()  # the slower rank's time is the step's
        if rank == 0:
            queue.put((warmup, seconds))
    finally:
        dist.destroy_process_group()


def _time_data_parallel(lever: Lever, model: nn.Module, setup: Setup, smoothing: float, batches: list,
                        steps: int) -> tuple[float, float]:  # fmt: skip
    """Warm-up and timed seconds of ``steps`` steps of the whole batch split over ``lever.processes`` processes."""
    if batches[0][0].shape[0] < lever.processes:
        raise UserError(f"batch {batches[0][0].shape[0]} cannot be split over {lever.processes} processes")
    queue = mp.get_context("spawn").SimpleQueue()
    args = (lever, _free_port(), model, setup.recipe.optim, smoothing, batches, steps, queue)
    mp.spawn(_data_parallel_worker, args=args, nprocs=lever.processes, join=True)
    return queue.get()


def time_lever(setup: Setup, lever: Lever, flops_per_image: float, peaks: dict[str, float]) -> dict[str, Any]:
    """One measurement of ``lever``: warm-up seconds, then images/s over about TIMED_IMAGES images."""
    batch = max(1, round(setup.recipe.train.batch_size * lever.batch_factor))
    model = copy.deepcopy(setup.model).train()
    memory_format = torch.channels_last if lever.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = _optimizer(setup, model, lever.optimizer_impl)
    if optimizer is None:
        why = f"optimiser {setup.recipe.optim.name!r} has no {lever.optimizer_impl} implementation"
        return {"images_per_second": None, "why": why}
    smoothing = float(setup.recipe.task.options.get("label_smoothing", 0.0))
    batches = [(x.contiguous(memory_format=memory_format), y) for x, y in _batches(setup, batch, WARMUP_STEPS + 1)]
    steps = max(2, -(-TIMED_IMAGES // batch))
    if lever.processes > 1:
        warmup, seconds = _time_data_parallel(lever, model, setup, smoothing, batches, steps)
    else:
        step = _step_fn(lever, model, optimizer, smoothing)
        warmup, seconds = _time_steps(step, batches, steps, lever.threads)
    rate = steps * batch / seconds
    return {
        "batch_size": batch,
        "images_per_second": round(rate, 1),
        "warmup_seconds": round(warmup, 2),
        "flops_fraction": float(f"{flops_per_image * rate / (peaks[lever.precision] * 1e9):.4g}"),  # tiny nets: > 0
    }


def profile_bare(setup: Setup) -> list[dict[str, Any]]:
    """torch.profiler's most expensive operators (self CPU time) over a few bare steps."""
    model = copy.deepcopy(setup.model).train().to(memory_format=torch.channels_last)
    optimizer = build_optimizer(setup.recipe.optim, model.parameters())
    step = _step_fn(LEVERS[0], model, optimizer, 0.0)
    batches = _batches(setup, setup.recipe.train.batch_size, PROFILED_STEPS + 1)
    step(*batches[0])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for x, y in batches[1:]:
            step(x.contiguous(memory_format=torch.channels_last), y)
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:PROFILE_ROWS]
    total = sum(e.self_cpu_time_total for e in profiler.key_averages()) or 1.0
    return [{"operator": e.key, "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 2),
             "share": round(e.self_cpu_time_total / total, 4)} for e in events]  # fmt: skip


def measure_recipe(recipe_name: str, overrides: dict[str, str], levers: tuple[Lever, ...], rounds: int,
                   peaks: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    setup = prepare(recipe_name, overrides)
    channels, size = setup.data.train.channels, setup.data.train.image_size
    flops = training_flops_per_image(setup.model, channels, size)
    runs: dict[str, list[dict[str, Any]]] = {lever.name: [] for lever in levers}
    for round_number in range(rounds):
        for lever in levers:
            result = time_lever(setup, lever, flops, peaks)
            runs[lever.name].append(result)
            rate = result["images_per_second"]
            shown = f"{rate:.0f} images/s" if rate is not None else result["why"]
            print(f"{recipe_name} round {round_number + 1} {lever.name}: {shown}", flush=True)
    rows = {}
    bare = statistics.median(r["images_per_second"] for r in runs["bare"])
    for name, results in runs.items():
        rates = [r["images_per_second"] for r in results if r["images_per_second"] is not None]
        median = statistics.median(rates) if rates else None
        rows[name] = {
            "images_per_second": median,
            "ratio_to_bare": round(median / bare, 3) if median is not None else None,
            "warmup_seconds": statistics.median(r["warmup_seconds"] for r in results) if rates else None,
            "flops_fraction": statistics.median(r["flops_fraction"] for r in results) if rates else None,
            "batch_size": results[0].get("batch_size"),
            "runs": results,
        }
    return {"training_flops_per_image": flops, "levers": rows, "profile_bare": profile_bare(setup)}


def run_step_study(*, out: Path | None, overrides: dict[str, str] | None, results_dir: Path, machine: dict,
                   recipes: tuple[str, ...] = RECIPES, levers: tuple[Lever, ...] = LEVERS,
                   rounds: int = ROUNDS) -> dict:  # fmt: skip
    if rounds < 1:
        raise UserError(f"rounds = {rounds}: expected at least 1")
    peaks = {"bf16": matmul_peak_gflops(torch.bfloat16), "fp32": matmul_peak_gflops(torch.float32)}
    print(f"matmul peak: bf16 {peaks['bf16']:.0f} GFLOP/s, fp32 {peaks['fp32']:.0f} GFLOP/s", flush=True)
    result: dict[str, Any] = {"benchmark": "step", "goal": GOAL, "matmul_peak_gflops": peaks, "rounds": rounds,
                              "timed_images": TIMED_IMAGES, "recipes": {}}  # fmt: skip
    for recipe in recipes:
        result["recipes"][recipe] = measure_recipe(recipe, overrides or {}, levers, rounds, peaks)
    path = write_result(result, "step", overrides, machine, out, results_dir)
    for recipe, figures in result["recipes"].items():
        for name, row in figures["levers"].items():
            if row["images_per_second"] is not None:
                print(f"{recipe:<14} {name:<22} {row['images_per_second']:>8.0f} images/s  x{row['ratio_to_bare']:.2f}"
                      f"  warm-up {row['warmup_seconds']:.1f} s  {row['flops_fraction']:.1%} of the peak")  # fmt: skip
    print(f"written {path}")
    return result
