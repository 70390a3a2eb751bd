"""TensorBoard event files for ``train.loggers = ["csv", "tensorboard"]``: what metrics.csv holds, plus the figures.

Rank 0 writes ``RUN_DIR/tensorboard`` through ``torch.utils.tensorboard.SummaryWriter``:

- per step: ``train/<name>`` for the loss and each value the task logs, ``schedule/lr``, ``schedule/momentum``;
- per epoch: ``valid/<metric>``, ``train_epoch/<name>`` (the epoch's sample-weighted train averages),
  ``epoch`` and ``time/epoch_seconds``, and as images every figure a callback drew at that epoch end
  (:meth:`Callback.figures`: weakseg's HSV grid, split-brain's colours, the training history).

Every value sits at the global step, epoch values included, so that a resumed run can purge by step: its
writer opens with ``purge_step`` one past the checkpoint's step, and TensorBoard drops what the killed run wrote
after that checkpoint (the steps being replayed), so each step appears once. The writer is flushed each time the
trainer is about to checkpoint, so nothing a checkpoint covers is left in a lost buffer.

A two-phase transfer run writes phase 1 to ``RUN_DIR/phase1/tensorboard``: each phase is its own ``fit`` whose
steps count from 1, with its own checkpoints and metrics.csv there, and the event files keep the same steps as
those tables (TensorBoard lists the phases as two runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from convscope.engine.callbacks import Callback
from convscope.errors import UserError

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from convscope.engine.trainer import Trainer

LOG_DIR = "tensorboard"
# Step-row keys that are not the step's own values (lr and momentum get their own tags).
_NOT_VALUES = ("epoch", "step", "lr", "momentum")


class TensorBoardLogger(Callback):
    """Mirrors the run's metrics and per-epoch figures into TensorBoard event files under ``run_dir/tensorboard``."""

    order = 100  # after the callbacks that draw the epoch's figures

    def __init__(self, run_dir: Path) -> None:
        self.log_dir = Path(run_dir) / LOG_DIR
        self.writer: SummaryWriter | None = None
        self.purge_step = 1
        self.valid_names: set[str] = set()

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.is_main:
            return
        _summary_writer_class()  # a missing package fails now, not after the first epoch
        # Steps up to the one restored are final; any later ones in the files are being replayed.
        self.purge_step = trainer.global_step + 1

    def _writer(self) -> SummaryWriter:
        """Opened at the first value, so a resumed run with nothing left to do leaves no empty file."""
        if self.writer is None:
            self.writer = _summary_writer_class()(log_dir=str(self.log_dir), purge_step=self.purge_step)
        return self.writer

    def on_train_batch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if not trainer.is_main:
            return
        writer, step = self._writer(), trainer.global_step
        for name, value in logs.items():
            if name not in _NOT_VALUES and not name.endswith("_avg"):  # TensorBoard smooths on its own
                writer.add_scalar(f"train/{name}", value, step)
        writer.add_scalar("schedule/lr", logs["lr"], step)
        writer.add_scalar("schedule/momentum", logs["momentum"], step)
        every = trainer.train_config.checkpoint_every
        if every > 0 and step % every == 0:  # the trainer checkpoints after this (at an epoch end too: harmless)
            writer.flush()

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if not trainer.is_main:
            return
        self.valid_names = set(metrics)
        for name, value in metrics.items():
            self._writer().add_scalar(f"valid/{name}", value, trainer.global_step)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        if not trainer.is_main:
            return
        writer, step = self._writer(), trainer.global_step
        writer.add_scalar("epoch", row["epoch"], step)
        writer.add_scalar("time/epoch_seconds", row["seconds"], step)
        for name, value in row.items():
            if name.startswith("train_") and name not in self.valid_names:
                writer.add_scalar(f"train_epoch/{name.removeprefix('train_')}", value, step)
        for callback in trainer.callbacks:
            for name, path in callback.figures().items():
                writer.add_image(f"figures/{name}", read_rgb(path), step, dataformats="HWC")
        writer.flush()  # the epoch-end checkpoint follows

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_rgb(path: Path) -> np.ndarray:
    """An image file as an H x W x 3 uint8 array (a PNG's alpha dropped)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _summary_writer_class() -> type[SummaryWriter]:
    """Imported on use: only runs that ask for TensorBoard pay its import time or need the package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch raises it when the tensorboard package is missing
        raise UserError(
            "train.loggers includes 'tensorboard' but the tensorboard package is not installed: pip install tensorboard"
        ) from e
    return SummaryWriter
