"""What a learning problem must say so the engine can train it (the Lightning pattern, kept narrow).

A task knows what a batch means, its loss, its metrics and its predictions. The
engine (``convscope.engine.Trainer``) owns the loop, devices, precision,
optimiser, schedule, callbacks and checkpoints, and calls only these methods.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn
from torchmetrics import MetricCollection

Batch = Any  # whatever the task's loader yields; for images: (x float NCHW, y int64 N)


class Task(Protocol):
    name: str

    def training_step(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the loss to back-propagate and per-batch values to log (e.g. ``{"accuracy": ...}``).

        Logged values are scalar tensors (detached by the engine); ``loss`` is always logged.
        """
        ...

    def make_metrics(self) -> MetricCollection:
        """A fresh torchmetrics collection for one evaluation pass (validation or test)."""
        ...

    def validation_step(self, model: nn.Module, batch: Batch, metrics: MetricCollection) -> None:
        """Update ``metrics`` with one batch (the engine runs it in eval mode under inference_mode)."""
        ...

    def batch_size(self, batch: Batch) -> int:
        """Number of samples in ``batch`` (to weight averages)."""
        ...
