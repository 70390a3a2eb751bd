"""The races (``convscope bench race-cifar10``, ``race-fashion``): each system trained to the end of its own
schedule, the systems taking turns over the repetitions of one invocation (A B A B), each run in its own process,
test accuracy after every epoch on a paused clock.

Per system and repetition: seconds to the target, final accuracy, training images/s and the fraction of the
machine's matmul peak (measured once, fp32 and bf16) that training reaches: the network's training FLOPs per image
(forward and backward, counted by torch's FLOP counter) x images/s / the peak of the system's precision. Then the
medians over the repetitions, and each system's median time to target over the reference system's.

- ``race-cifar10``: airbench94 (:mod:`convscope.bench.airbench`) against convscope's ``cifar10`` recipe. The target
  is airbench's own final accuracy (with its test-time augmentation) in the same repetition: the two runs of a
  repetition are back to back, so a machine that drifts over the invocation moves both.
- ``race-fashion``: convscope's ``fashion-mnist`` recipe against the seeds' plain loop, with the bare loop over the
  same tensors. airbench has no Fashion-MNIST recipe, and a port of its CIFAR-10 settings to 28x28 greyscale would
  be a recipe of ours rather than a published peer; the issue's figures for Fashion-MNIST are set against the plain
  loop (and a 30-second budget), and the bare loop tells the engine's part from the recipe's.
"""

from __future__ import annotations

import copy
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convscope.bench import airbench
from convscope.bench.runs import child_main, run_in_process, write_result
from convscope.bench.speed import matmul_peak_gflops, ratio
from convscope.bench.speed_systems import SYSTEMS as SPEED_SYSTEMS
from convscope.bench.speed_systems import prepare, run_system, seconds_to_target
from convscope.errors import UserError

SYSTEMS = ("airbench", *SPEED_SYSTEMS)


@dataclass(frozen=True)
class Race:
    recipe: str  # convscope's recipe, and the data every system trains on
    systems: tuple[str, ...]  # raced in this order within each repetition
    reference: str  # the system whose median time to target the others' are divided by
    max_ratio: float  # the goal: convscope's median time to target over the reference's, at most
    goal: str
    target: float | None = None  # None: the reference's final accuracy in each repetition
    max_seconds: float | None = None  # the goal: convscope's median time to target, at most


RACES = {
    "race-cifar10": Race(
        "cifar10",
        ("airbench", "convscope"),
        "airbench",
        0.8,
        "convscope's cifar10 recipe reaches airbench94's final accuracy (with its test-time augmentation) in <= 0.8x "
        "airbench94's time to it, medians of the same run",
    ),
    "race-fashion": Race(
        "fashion-mnist",
        ("convscope", "bare", "plain"),
        "plain",
        0.25,
        ">= 93.0% test accuracy in <= 30 s of training and <= 0.25x the plain loop's time, medians of the same run",
        target=0.93,
        max_seconds=30.0,
    ),
}
FIGURES = ("seconds_to_target", "final_accuracy", "images_per_second", "flops_fraction")


def check_options(race: Race, systems: tuple[str, ...], repeat: int, target: float | None) -> None:
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise UserError(f"--repeat {repeat}: expected an integer >= 1 (repetitions of each system)")
    if target is not None and not 0 < target <= 1:
        raise UserError(f"--target {target}: expected a test accuracy in (0, 1]")
    unknown = [system for system in systems if system not in SYSTEMS]
    if unknown or not systems or len(set(systems)) != len(systems):
        problem = f"unknown system {unknown[0]!r}" if unknown else "each system once, at least one"
        raise UserError(f"race systems {list(systems)}: {problem}; expected some of: {', '.join(SYSTEMS)}")
    if target is None and race.target is None and race.reference not in systems:
        raise UserError(f"race without {race.reference!r}: its target is {race.reference}'s final accuracy; "
                        "give --target")  # fmt: skip


def system_overrides(system: str, overrides: dict[str, str]) -> dict[str, str]:
    """airbench takes its own hyper-parameters (``airbench.*``) and the recipe's data; the others the recipe."""
    if system == "airbench":
        return overrides
    return {key: value for key, value in overrides.items() if not key.startswith(airbench.PREFIX)}


def training_flops_per_image(model: nn.Module, in_channels: int, image_size: tuple[int, int]) -> float:
    """FLOPs of one training step's forward and backward passes per image (torch's FLOP counter), on a copy so
    that the batch-norm statistics of ``model`` stay as they are."""
    model = copy.deepcopy(model).train()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(2, in_channels, *image_size)).float().sum().backward()
    return counter.get_total_flops() / 2


def networks_flops(race: Race, systems: tuple[str, ...], overrides: dict[str, str]) -> dict[str, float]:
    """Training FLOPs per image of each system's network (the speed systems share the recipe's). Building them
    also checks the overrides and the data before any system starts."""
    airbench.parse_hyper(overrides)
    setup = prepare(race.recipe, system_overrides("convscope", overrides))
    channels, size = setup.data.train.channels, setup.data.train.image_size
    flops = {}
    for system in systems:
        if system == "airbench":
            network = airbench.airbench_net(len(setup.data.classes), channels, size)
        else:
            network = setup.model
        flops[system] = training_flops_per_image(network, channels, size)
    return flops


def _run_in_process(system: str, recipe: str, overrides: dict[str, str]) -> dict:
    """One training run in a process of its own."""
    entry = "import sys; from convscope.bench.race import main; main(sys.argv[1:])"
    return run_in_process(entry, [system, recipe, json.dumps(overrides)], f"race, system {system!r}")


def median(values: list[float | None]) -> float | None:
    """The median, a None (target not reached) counting as slower than any time; None if the median is one."""
    middle = statistics.median([float("inf") if value is None else value for value in values])
    return None if middle == float("inf") else round(middle, 4)


def run_race_study(
    name: str,
    *,
    out: Path | None,
    overrides: dict[str, str] | None,
    results_dir: Path,
    machine: dict,
    target: float | None = None,
    repeat: int = 2,
    systems: tuple[str, ...] | None = None,
) -> dict:
    """Race ``name``'s systems (default: the race's own) ``repeat`` times each, in turn. ``target`` replaces the
    race's (a fixed accuracy for every repetition)."""
    race = RACES[name]
    systems = tuple(systems) if systems is not None else race.systems
    check_options(race, systems, repeat, target)
    overrides = overrides or {}
    flops = networks_flops(race, systems, overrides)
    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    print(f"matmul peak (2048x2048): {peaks['fp32']:.0f} GFLOP/s fp32, {peaks['bf16']:.0f} GFLOP/s bf16")
    runs: dict[str, list[dict]] = {system: [] for system in systems}
    for repetition in range(1, repeat + 1):
        for system in systems:
            print(f"--- {system}, repetition {repetition} of {repeat}", flush=True)
            row = _run_in_process(system, race.recipe, system_overrides(system, overrides))
            achieved = flops[system] * row["images_per_second"]
            row.update(repetition=repetition, flops_fraction=round(achieved / (peaks[row["precision"]] * 1e9), 4))
            runs[system].append(row)
        goal = target or race.target or runs[race.reference][-1]["final_accuracy"]
        for system in systems:
            row = runs[system][-1]
            row.update(target=goal, seconds_to_target=seconds_to_target(row["curve"], goal))
    medians = {system: {key: median([row[key] for row in rows]) for key in FIGURES} for system, rows in runs.items()}
    figures, reached = {}, {}
    if race.reference in systems:
        for system in systems:
            if system == race.reference:
                continue
            own, reference = medians[system]["seconds_to_target"], medians[race.reference]["seconds_to_target"]
            figures[f"{system}_vs_{race.reference}"] = ratio(own, reference)
            figures[f"{system}_vs_{race.reference}_per_repetition"] = [
                ratio(mine["seconds_to_target"], theirs["seconds_to_target"])
                for mine, theirs in zip(runs[system], runs[race.reference], strict=True)
            ]
        convscope_ratio = figures.get(f"convscope_vs_{race.reference}")
        reached["ratio"] = convscope_ratio is not None and convscope_ratio <= race.max_ratio
    if race.max_seconds is not None and "convscope" in systems:
        # The time budget is the goal's only at the goal's accuracy or above.
        seconds = medians["convscope"]["seconds_to_target"]
        at_goal_accuracy = target is None or target >= (race.target or 0)
        reached["within_seconds"] = at_goal_accuracy and seconds is not None and seconds <= race.max_seconds
    result = {
        "benchmark": name,
        "goal": race.goal,
        "recipe": race.recipe,
        "systems": list(systems),
        "repeat": repeat,
        "target": target or race.target,
        "target_rule": "as given" if target or race.target else f"{race.reference}'s final accuracy, per repetition",
        "runs": runs,
        "medians": medians,
        "figures": figures,
        "reached": reached,
        "matmul_peak_gflops": {key: round(value, 1) for key, value in peaks.items()},
        "train_flops_per_image": flops,
    }
    path = write_result(result, name, overrides, machine, out, results_dir, target=target, repeat=repeat)
    print_table(runs, medians)
    print(", ".join(f"{key} {value}" for key, value in figures.items() if not key.endswith("_per_repetition"))
          + f"; written {path}")  # fmt: skip
    return result


def print_table(runs: dict[str, list[dict]], medians: dict[str, dict]) -> None:
    def cell(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    print(f"{'system':<11}{'run':>7}{'target':>8}{'s to target':>12}{'final acc':>10}{'img/s':>9}{'of peak':>9}")
    for system, rows in runs.items():
        for row in [*rows, {**medians[system], "repetition": "median", "target": None}]:
            print(f"{system:<11}{row['repetition']:>7}{cell(row['target'], '.4f'):>8}"
                  f"{cell(row['seconds_to_target'], '.1f'):>12}{cell(row['final_accuracy'], '.4f'):>10}"
                  f"{cell(row['images_per_second'], '.0f'):>9}{cell(row['flops_fraction'], '.1%'):>9}")  # fmt: skip


def _race_system(system: str, recipe_name: str, overrides: dict[str, str], work_dir: Path) -> dict:
    if system == "airbench":
        return airbench.run_airbench(recipe_name, overrides)
    return run_system(system, recipe_name, overrides, work_dir)


def main(argv: list[str]) -> None:
    """One run of one system in the process :func:`_run_in_process` starts (SYSTEM RECIPE OVERRIDES RESULT_JSON)."""
    child_main(argv, _race_system)
