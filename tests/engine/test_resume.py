"""Exact resume: an interrupted run, resumed, ends with the weights and metrics of an uninterrupted one."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from convscope.engine import load_checkpoint

from . import helpers
from .helpers import Crash, CrashAt

TIMING = {"seconds"}  # wall-clock columns differ between any two runs


def _metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _assert_same_run(run: Path, reference: Path) -> None:
    got = load_checkpoint(run / "checkpoints" / "last.pt")
    want = load_checkpoint(reference / "checkpoints" / "last.pt")
    assert got["global_step"] == want["global_step"] == 18
    for key, value in want["model"].items():
        assert torch.equal(got["model"][key], value), key  # bit for bit, not just within 1e-6
    for index, state in want["optimizer"]["state"].items():
        assert torch.equal(got["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"])
    assert _metrics(run) == _metrics(reference)
    assert got["history"]["best"].keys() == want["history"]["best"].keys()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    helpers.train_run(run, checkpoint_every=4)
    return run


@pytest.mark.parametrize(
    ("checkpoint_every", "crash_at", "position"),
    [(4, 11, (1, 2, 8)), (0, 9, (1, 0, 6))],
    ids=["mid-epoch", "epoch-end"],
)
def test_resume_after_a_crash_is_exact(tmp_path, reference, checkpoint_every, crash_at, position):
    run = tmp_path / "run"
    with pytest.raises(Crash):
        helpers.train_run(run, checkpoint_every=checkpoint_every, callbacks=[CrashAt(crash_at)])
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (state["epoch"], state["batch"], state["global_step"]) == position
    assert len(_metrics(run)) == position[2] + position[0]  # the table matches the checkpoint
    helpers.train_run(run, resume=True, checkpoint_every=checkpoint_every)
    _assert_same_run(run, reference)


def test_resume_after_sigkill_is_exact(tmp_path, reference):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    # The script is the same run slowed by 0.1 s a step, so the kill lands mid-run.
    command = [sys.executable, helpers.__file__, str(run), "--checkpoint-every", "4", "--sleep", "0.1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not last.exists():
            assert proc.poll() is None, f"training script ended early: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(last)["global_step"]
    assert 0 < killed_at < 18
    helpers.train_run(run, resume=True, checkpoint_every=4)
    _assert_same_run(run, reference)
