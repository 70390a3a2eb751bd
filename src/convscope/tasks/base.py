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
    modality: str  # the kind of data it learns from: "image", "text" (see convscope.data.modality)

    def __init__(self, num_classes: int, **options: Any) -> None: ...

    def training_step(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the loss to back-propagate and per-batch values to log (e.g. ``{"accuracy": ...}``).

        Logged values are scalar tensors (detached by the engine); ``loss`` is always logged.
        """
        ...

    def make_metrics(self, detailed: bool = False) -> MetricCollection:
        """A fresh torchmetrics collection for one evaluation pass.

        Validation gets scalars only; ``detailed`` (``convscope evaluate``) may add per-class values and a
        confusion matrix.
        """
        ...

    def validation_step(self, model: nn.Module, batch: Batch, metrics: MetricCollection) -> None:
        """Update ``metrics`` with one batch (the engine runs it in eval mode under inference_mode)."""
        ...

    def batch_size(self, batch: Batch) -> int:
        """Number of samples in ``batch`` (to weight averages)."""
        ...

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities, N x num_classes."""
        ...
