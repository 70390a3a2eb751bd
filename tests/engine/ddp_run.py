"""A tiny data-parallel run for the distributed tests, started by the elastic launcher.

``python -m tests.engine.ddp_run launch RUN_DIR [--resume] [--die-at STEP]`` launches 2 workers (gloo) that
train :func:`tiny_run`'s model on :func:`shard_loaders` (8 examples per rank and step); with ``--die-at``, rank 1
kills itself with SIGKILL after that global step. It prints the launcher's error line and exits 2 as the CLI does.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from convscope.data.loader import IndexLoader
from convscope.distributed import launch, process_group, rank_and_world_size, report_crash
from convscope.engine import Callback, OptimConfig, TrainConfig, Trainer
from convscope.errors import UserError
from tests.engine.helpers import NUM_CLASSES, ToyTask, toy_data

PER_RANK_BATCH = 8
EPOCHS = 2


class ToyShards(IndexLoader):
    """Batches of the toy tensors; under torchrun each rank takes its shard (evaluation unpadded)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, train: bool) -> None:
        rank, world_size = rank_and_world_size()
        super().__init__(len(y), batch_size, shuffle=train, seed=3, rank=rank, world_size=world_size, pad=train)
        self.x, self.y = x, y

    def _batch(self, index: torch.Tensor, epoch: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


def no_batchnorm_model() -> nn.Module:
    """No batch norm (per-rank batch statistics would differ from one process's) and no dropout."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, NUM_CLASSES)
    )


class DieAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if trainer.rank == 1 and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def tiny_run(run_dir: Path | None, batch_size: int, *, resume: bool = False, die_at: int = 0) -> Trainer:
    """96 training and 48 validation examples, SGD + OneCycle, a checkpoint every 2 steps."""
    x, y = toy_data()
    vx, vy = toy_data(48, seed=1)
    train = TrainConfig(epochs=EPOCHS, device="cpu", quiet=True, checkpoint_every=2, batch_size=batch_size)
    trainer = Trainer(no_batchnorm_model(), ToyTask(), OptimConfig(name="sgd", lr=0.05, scheduler="onecycle"), train,
                      run_dir=run_dir, callbacks=[DieAt(die_at)] if die_at else [])  # fmt: skip
    trainer.fit(ToyShards(x, y, batch_size, train=True), ToyShards(vx, vy, 16, train=False), resume=resume)
    return trainer


def main(argv: list[str]) -> int:
    if argv[0] == "launch":
        try:
            launch(2, argv[1:], run_dir=Path(argv[1]), module="tests.engine.ddp_run")
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    run_dir, resume = Path(argv[0]), "--resume" in argv
    die_at = int(argv[argv.index("--die-at") + 1]) if "--die-at" in argv else 0
    try:  # as the CLI's workers do
        with process_group("gloo", torch.device("cpu")):
            tiny_run(run_dir, PER_RANK_BATCH, resume=resume, die_at=die_at)
    except Exception as e:
        if report_crash(e):
            return 1
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
