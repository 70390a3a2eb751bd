"""What the benchmark studies share: one training run that a restarted study keeps or resumes."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from convscope.config import load_recipe
from convscope.errors import UserError
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


def bench_command(
    name: str, overrides: dict[str, str] | None = None, target: float | None = None, repeat: int | None = None
) -> str:
    """The command line that reproduces a benchmark's JSON, overrides, target and repetitions included."""
    words = ["convscope", "bench", name, *(f"--set {key}={value}" for key, value in (overrides or {}).items())]
    words += [f"--target {target}"] if target is not None else []
    return " ".join(words + ([f"--repeat {repeat}"] if repeat is not None else []))


def write_result(
    result: dict,
    name: str,
    overrides: dict[str, str] | None,
    machine: dict,
    out: Path | None,
    results_dir: Path,
    target: float | None = None,
    run_dir: Path | None = None,
    repeat: int | None = None,
) -> Path:
    """The one writer of a benchmark's JSON (``out``, default ``results_dir/NAME.json``): its figures, then the
    overrides, the study's folder, the command that reproduces it (overrides and target included), the date and
    the machine with its load."""
    result.update(overrides=overrides or {}, **({"run_dir": str(run_dir)} if run_dir is not None else {}))
    command = bench_command(name, overrides, target, repeat)
    result.update(command=command, date=time.strftime("%Y-%m-%d"), machine=machine)
    path = out or results_dir / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def run_in_process(entry: str, args: list[str], what: str) -> dict:
    """``python -c ENTRY ARGS... RESULT_JSON`` in a process of its own (its peak memory its own, nothing left over
    from the last run) and the JSON it writes. ``-c`` rather than ``-m``: the bench package imports the entry's
    module first, and runpy warns about that. stdout (the epoch lines) streams; stderr is held so that the child's
    own ``error:`` line becomes ours (naming ``what``) rather than a second one."""
    with tempfile.TemporaryDirectory(prefix="convscope-bench-") as folder:
        result_path = Path(folder) / "result.json"
        command = [sys.executable, "-c", entry, *args, str(result_path)]
        completed = subprocess.run(command, check=False, stderr=subprocess.PIPE, text=True)
        errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
        if completed.returncode != 0 or not result_path.is_file():
            if errors:
                raise UserError(f"{what}: {errors[-1].removeprefix('error: ')}")
            sys.stderr.write(completed.stderr)
            raise UserError(f"{what} failed (exit status {completed.returncode})")
        sys.stderr.write(completed.stderr)
        return json.loads(result_path.read_text())


def child_main(argv: list[str], run: Callable[[str, str, dict[str, str], Path], dict]) -> None:
    """The child's side of :func:`run_in_process`: ``SYSTEM RECIPE OVERRIDES_JSON RESULT_JSON`` -> ``run(system,
    recipe, overrides, work_dir)``'s result written as JSON; a user error is one ``error:`` line, exit status 2."""
    system, recipe_name, overrides, result_path = argv
    try:
        with tempfile.TemporaryDirectory(prefix=f"bench-{system}-") as work_dir:
            result = run(system, recipe_name, json.loads(overrides), Path(work_dir))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    Path(result_path).write_text(json.dumps(result))
