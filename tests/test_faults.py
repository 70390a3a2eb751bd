"""Faults during a run: a full disk and SIGTERM are one ``error:`` line, the last checkpoint stays valid and
``train --resume`` finishes the run; what an interrupted write left behind is removed at the next start."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.figure
import pytest
import torch

from convscope.engine.checkpoint import load_checkpoint
from tests.cli_helpers import cli, one_error_line
from tests.data.helpers import make_imagefolder

TINY = ["--model", "fastnet-small", "--batch-size", "8", "--precision", "fp32", "--quiet",
        "--set", "data.valid_fraction=0.25", "--set", "data.test_fraction=0.25"]  # fmt: skip


def _disk_full_after(monkeypatch: pytest.MonkeyPatch, writes: int) -> None:
    """``torch.save`` writes ``writes`` files, then the disk is full (after a few bytes of the next one)."""
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > writes:
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_a_full_disk_is_one_line_the_last_checkpoint_stays_and_resume_finishes(capsys, tmp_path, monkeypatch):
    data = make_imagefolder(tmp_path / "data", per_class=8, size=(16, 16))
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _disk_full_after(patch, writes=2)  # epoch 1's best.pt and last.pt; epoch 2's first write fails
        code, _, err = cli(capsys, "train", "--data", f"imagefolder:{data}", "--out", run, "--epochs", "2", *TINY)
    assert code == 2, err
    line = one_error_line(err)
    last = run / "checkpoints" / "last.pt"
    assert "checkpoints" in line and "the disk is full" in line
    assert f"the last good checkpoint {last} stays valid" in line and f"convscope train --resume --out {run}" in line
    assert load_checkpoint(last)["epoch"] == 1  # the previous checkpoint, whole
    assert not list((run / "checkpoints").glob(".*.tmp"))  # the failed write cleaned up after itself

    # A SIGKILL mid-write leaves its temporary file: the next start removes it, unless its process still lives.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [run / "checkpoints" / f".last.pt.{dead.pid}.tmp", run / f".metrics.csv.{dead.pid}.tmp"]
    live = run / "checkpoints" / f".best.pt.{os.getppid()}.tmp"
    for path in (*stale, live):
        path.write_bytes(b"half a checkpoint")
    code, out, err = cli(capsys, "train", "--resume", "--out", run)
    assert code == 0, err
    assert not any(path.exists() for path in stale) and live.exists()
    assert f"removed {stale[0]}" in out or f"removed {stale[1]}" in out
    assert (run / "summary.json").is_file() and load_checkpoint(last)["epoch"] == 2

    # Figures too: a full disk while drawing them names the figure.
    def no_room(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", no_room)
    code, _, err = cli(capsys, "plot", run)
    assert code == 2 and one_error_line(err) == f"error: cannot write {run / 'plots' / 'history.png'}: the disk is full"


def test_a_write_error_before_any_checkpoint_says_to_train_again(capsys, tmp_path, monkeypatch):
    data = make_imagefolder(tmp_path / "data", per_class=8, size=(16, 16))
    _disk_full_after(monkeypatch, writes=0)
    code, _, err = cli(capsys, "train", "--data", f"imagefolder:{data}", "--out", tmp_path / "run", "--epochs", "1",
                       *TINY)  # fmt: skip
    assert code == 2
    assert "no checkpoint was written yet: make room on the disk and train again" in one_error_line(err)


def test_sigterm_stops_a_run_with_one_line_and_status_143_and_resume_finishes_it(tmp_path, convscope_home: Path):
    data = make_imagefolder(tmp_path / "d", per_class=12, size=(16, 16))
    run = tmp_path / "run"
    env = {**os.environ, "CONVSCOPE_HOME": str(convscope_home)}
    command = [sys.executable, "-m", "convscope"]
    args = ["train", "--data", f"imagefolder:{data}", "--out", run, *TINY, "--epochs", "10",
            "--set", "train.checkpoint_every=1"]  # fmt: skip
    process = subprocess.Popen([*command, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.pt").exists():
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    line = one_error_line(err)
    assert "stopped by SIGTERM" in line and f"convscope train --resume --out {run}" in line
    assert not (run / "summary.json").exists()

    done = subprocess.run([*command, "train", "--resume", "--out", run], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (run / "summary.json").is_file()


def test_a_full_disk_while_drawing_an_explanation_is_one_error_naming_the_figure(tmp_path, monkeypatch):
    import errno

    import matplotlib.pyplot as plt
    import pytest

    from convscope.errors import UserError
    from convscope.explain.figures import save_figure

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    fig = plt.figure()
    monkeypatch.setattr(fig, "savefig", full)
    with pytest.raises(UserError, match=r"cannot write .*gradcam.png: the disk is full"):
        save_figure(fig, tmp_path / "gradcam.png")
