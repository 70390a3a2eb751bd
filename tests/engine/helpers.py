"""A tiny task, model and loader for the engine's tests, and a script entry point for the kill test.

Run as a script (``python helpers.py RUN_DIR [--resume] [--sleep S] [--checkpoint-every N]``) it trains
the same tiny run as :func:`train_run`, so a test can kill it and compare with an in-process run.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from convscope.engine import Callback, OptimConfig, TrainConfig, Trainer

NUM_CLASSES = 3


class ToyTask:
    """Classification of (x, y) batches; logs accuracy, validates loss and accuracy."""

    name = "toy"

    def training_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        logits = model(x).float()
        return F.cross_entropy(logits, y), {"accuracy": (logits.argmax(1) == y).float().mean()}

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"loss": MeanMetric(), "accuracy": MulticlassAccuracy(NUM_CLASSES, average="micro")})

    def validation_step(self, model: nn.Module, batch, metrics: MetricCollection) -> None:
        x, y = batch
        logits = model(x).float()
        metrics["loss"].update(F.cross_entropy(logits, y, reduction="none"))
        metrics["accuracy"].update(logits, y)

    def batch_size(self, batch) -> int:
        return batch[1].shape[0]


def tiny_model(seed: int = 0) -> nn.Module:
    """Conv + BatchNorm (buffers to restore) + Dropout (global RNG to restore) + linear head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, NUM_CLASSES),
    )


def toy_data(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c is a bright 3x3 patch in corner c of a two-channel 8x8 noise image."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = torch.randn(n, 2, 8, 8, generator=g) * 0.5
    for c, (r, col) in enumerate([(0, 0), (0, 5), (5, 0)]):
        x[y == c, :, r : r + 3, col : col + 3] += 2.0
    return x, y


class ToyLoader:
    """Shuffling and augmentation drawn from generators keyed by (seed, epoch, batch), like TensorLoader."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, seed: int = 0, train: bool = True):
        self.x, self.y, self.batch_size, self.seed, self.train = x, y, batch_size, seed, train
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        order = (
            torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
            if self.train
            else torch.arange(n)
        )
        for b in range(self.start_batch, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.x[idx]
            if self.train:
                g = torch.Generator().manual_seed(self.seed * 10**6 + self.epoch * 1000 + b)
                x = x + 0.1 * torch.randn(x.shape, generator=g)
            yield x, self.y[idx]


def loaders(batch_size: int = 16) -> tuple[ToyLoader, ToyLoader]:
    x, y = toy_data()
    vx, vy = toy_data(48, seed=1)
    return ToyLoader(x, y, batch_size), ToyLoader(vx, vy, batch_size, train=False)


def make_trainer(
    run_dir: Path | None = None,
    *,
    optim: OptimConfig | None = None,
    callbacks: Sequence[Callback] = (),
    **train: object,
) -> Trainer:
    settings = {"epochs": 3, "device": "cpu", "quiet": True, **train}
    optim = optim or OptimConfig(name="sgd", lr=0.05, scheduler="onecycle")
    return Trainer(tiny_model(), ToyTask(), optim, TrainConfig(**settings), run_dir=run_dir, callbacks=callbacks)


@contextmanager
def one_thread() -> Iterator[None]:
    """The same kernels in the test process as in the script: results must match to the last bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_run(
    run_dir: Path | None,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    optim: OptimConfig | None = None,
    **train,
) -> Trainer:
    """The reference run: 3 epochs of 6 steps, SGD + OneCycle unless ``optim`` says otherwise, with validation."""
    train_loader, valid_loader = loaders()
    trainer = make_trainer(run_dir, optim=optim, callbacks=callbacks, **train)
    with one_thread():
        trainer.fit(train_loader, valid_loader, resume=resume)
    return trainer


class Crash(Exception):
    """Stands for a process dying mid-run, in-process."""


class CrashAt(Callback):
    """Raises :class:`Crash` after global step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, logs) -> None:
        if trainer.global_step == self.step:
            raise Crash


class Sleep(Callback):
    """Slows the script down so the test can kill it mid-run; numerics untouched."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        time.sleep(self.seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    args = parser.parse_args()
    train_run(args.run_dir, resume=args.resume, callbacks=[Sleep(args.sleep)], checkpoint_every=args.checkpoint_every)


if __name__ == "__main__":
    main()
