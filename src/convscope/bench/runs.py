"""What the benchmark studies share: one training run that a restarted study keeps or resumes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from convscope.config import load_recipe
from convscope.run import read_json


def timed_run(recipe_name: str, overrides: dict[str, str], out: Path) -> tuple[dict, float | None]:
    """Train one run of a study; a finished run in ``out`` is kept and an interrupted one resumed, so a long study
    survives a restart. The wall time is None for a run finished earlier."""
    from convscope import api

    if (out / "summary.json").exists():
        print(f"kept the finished run {out}")
        return read_json(out / "summary.json"), None
    started = time.perf_counter()
    api.train(load_recipe(recipe_name, overrides), out=out, resume=(out / "checkpoints").exists())
    return read_json(out / "summary.json"), time.perf_counter() - started


def bench_command(name: str, overrides: dict[str, str] | None = None, target: float | None = None) -> str:
    """The command line that reproduces a benchmark's JSON, overrides and target included."""
    words = ["convscope", "bench", name, *(f"--set {key}={value}" for key, value in (overrides or {}).items())]
    return " ".join(words + ([f"--target {target}"] if target is not None else []))


def write_result(
    result: dict,
    name: str,
    overrides: dict[str, str] | None,
    machine: dict,
    out: Path | None,
    results_dir: Path,
    target: float | None = None,
    run_dir: Path | None = None,
) -> Path:
    """The one writer of a benchmark's JSON (``out``, default ``results_dir/NAME.json``): its figures, then the
    overrides, the study's folder, the command that reproduces it (overrides and target included), the date and
    the machine with its load."""
    result.update(overrides=overrides or {}, **({"run_dir": str(run_dir)} if run_dir is not None else {}))
    result.update(command=bench_command(name, overrides, target), date=time.strftime("%Y-%m-%d"), machine=machine)
    path = out or results_dir / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
