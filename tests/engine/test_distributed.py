"""Data-parallel training on CPU with gloo and 2 processes: the same weights as one process over the same global
batches, synchronised metrics, a dying rank, resume, and bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convscope.data.loader import IndexLoader
from convscope.engine.checkpoint import load_checkpoint
from tests.cli_helpers import cli, one_error_line
from tests.data.helpers import make_imagefolder
from tests.engine.ddp_run import PER_RANK_BATCH, tiny_run

ROOT = Path(__file__).resolve().parents[2]
# DDP averages the ranks' mean gradients in another order of summation than one process: float32 rounding only.
TOLERANCE = 1e-5


def environment(home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "CONVSCOPE_HOME": str(home)}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def valid_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return [row for row in csv.DictReader(f) if row["split"] == "valid"]


def test_evaluation_shards_cover_every_example_once():
    shards = [IndexLoader(11, 4, shuffle=False, rank=r, world_size=3, pad=False) for r in range(3)]
    served = [i for shard in shards for i in shard._order(0).tolist()]
    assert sorted(served) == list(range(11)) and [len(s) for s in shards] == [1, 1, 1]
    padded = [IndexLoader(11, 4, shuffle=True, rank=r, world_size=3) for r in range(3)]
    assert {len(p._order(0)) for p in padded} == {4}  # training shards are padded to equal length


def test_two_processes_train_like_one_over_the_same_global_batches(capsys, tmp_path: Path, convscope_home: Path):
    data = make_imagefolder(tmp_path / "d", ("a", "b", "c"), per_class=16, size=(16, 16), splits=("train", "test"))
    # LeNet-5: no batch norm (per-rank statistics) and no dropout (per-rank random state); no augmentation (its
    # randomness is drawn per rank).
    common = ["train", "--data", f"imagefolder:{data}", "--model", "lenet5", "--epochs", "2", "--precision", "fp32",
              "--quiet", "--set", "augment.crop_padding=0", "--set", "augment.hflip=false",
              # an even training split: a padded shard would repeat an image that one process sees once
              "--set", "data.valid_fraction=0.1"]  # fmt: skip
    code, _, err = cli(capsys, *common, "--batch-size", "16", "--out", tmp_path / "one")
    assert code == 0, err
    two = subprocess.run(
        [sys.executable, "-m", "convscope", *common, "--batch-size", "8", "--nproc", "2", "--out", tmp_path / "two"],
        env=environment(convscope_home), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "two")) < TOLERANCE
    # Validation metrics are gathered from both ranks' shards: the same numbers as one process over the whole split.
    one_rows, two_rows = valid_rows(tmp_path / "one"), valid_rows(tmp_path / "two")
    assert [r["accuracy"] for r in two_rows] == [r["accuracy"] for r in one_rows]
    for a, b in zip(one_rows, two_rows, strict=True):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), abs=TOLERANCE)
    assert two.stdout.count("run directory:") == 1  # rank 0 alone reports (and writes)


def run_helper(*argv: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tests.engine.ddp_run", "launch", *argv],
        env=environment(home), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_dying_rank_stops_the_others_and_its_checkpoint_resumes(tmp_path: Path, convscope_home: Path):
    run = tmp_path / "run"
    died = run_helper(str(run), "--die-at", "4", home=convscope_home)  # the timeout fails the test if it hangs
    assert died.returncode == 2
    assert "rank 1 of 2 was killed by SIGKILL" in one_error_line(died.stderr)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["global_step"] in (2, 4)  # intact
    # The 2-rank checkpoint resumes in one process over the same global batches (6 steps an epoch either way)
    # and ends where an uninterrupted run ends.
    resumed = tiny_run(run, 2 * PER_RANK_BATCH, resume=True)
    reference = tiny_run(None, 2 * PER_RANK_BATCH)
    assert max_difference(resumed.model.state_dict(), reference.model.state_dict()) < TOLERANCE


def test_bad_distributed_input(capsys, tmp_path: Path):
    cases = [
        (["--nproc", "4096"], "CPU cores; use at most"),
        (["--nproc", "0"], "at least 1"),
        (["--nproc", "1", "--backend", "nccl"], "needs CUDA GPUs"),
        (["--nproc", "1", "--backend", "mpi"], "no mpi backend"),
        (["--nproc", "1", "--backend", "smoke-signals"], "smoke-signals"),
    ]
    for argv, fragment in cases:
        code, _, err = cli(capsys, "train", "--data", f"imagefolder:{tmp_path}", *argv)
        assert code == 2, argv
        assert fragment in one_error_line(err), (argv, err)
