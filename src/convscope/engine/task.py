"""What a learning problem says so the engine can train it (the Lightning pattern, kept narrow).

A task knows what a batch means, its loss, its metrics and its predictions. The engine
(``convscope.engine.Trainer``) owns the loop, devices, precision, optimiser, schedule, callbacks and
checkpoints. :class:`Task` declares every method and attribute the engine and ``convscope.api`` call; those
with a default here are optional, the others each task defines.

Two hooks reach layers above the tasks: a task's per-epoch figures (drawn by ``convscope.report``) and its
after-training measure (``convscope.segment``). The task names them in :attr:`Task.figures` and
:attr:`Task.measure`; the modules that draw or measure register them in :data:`FIGURES` and :data:`MEASURES`,
so that every import still points down the layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torchmetrics import MetricCollection

from convscope.engine.callbacks import Callback
from convscope.registry import Registry

Batch = Any  # whatever the task's loader yields; for images: (x float NCHW, y int64 N)

# name -> factory(loaders, run_dir, info) of a per-epoch figure callback
FIGURES: Registry[Callback] = Registry("figure")
# name -> measure(task, model, loaders, run_dir, info, precision) -> the summary's extra fields
MEASURES: Registry[dict[str, Any]] = Registry("after-training measure")


class Task:
    name: ClassVar[str] = ""
    modality: ClassVar[str] = "image"  # the kind of data it learns from (the table in convscope.data.modalities)
    # The model's outputs, when they are not the data's classes (segment: one more, the background).
    num_outputs: int | None = None
    # The models whose weights transfer.init may start from (None: any, matched by name).
    init_from: ClassVar[Sequence[str] | None] = None
    # The mask rule of a class-map task (weakseg, segment): how its maps become masks. None: not a class-map task.
    rule: str | None = None
    min_classes: ClassVar[int] = 1  # the classes the data must have (a classifier: 2; weakseg localises even one)
    # The validation metric that picks best.pt and drives early stopping when the recipe keeps train.monitor's
    # default ("accuracy"): a task without accuracy (detect: mAP) names its own.
    monitor: ClassVar[str] = "accuracy"
    monitor_mode: ClassVar[str] = "max"
    figures: ClassVar[Sequence[str]] = ()  # per-epoch figure callbacks, by their name in FIGURES
    measure: ClassVar[str | None] = None  # what to measure once trained, by its name in MEASURES

    def __init__(self, num_classes: int, **options: Any) -> None:
        self.num_classes = num_classes

    def training_step(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the loss to back-propagate and per-batch values to log (e.g. ``{"accuracy": ...}``).

        Logged values are scalar tensors (detached by the engine); ``loss`` is always logged.
        """
        raise NotImplementedError

    def make_metrics(self, detailed: bool = False) -> MetricCollection:
        """A fresh torchmetrics collection for one evaluation pass.

        Validation gets scalars only; ``detailed`` (``convscope evaluate``) may add per-class values and a
        confusion matrix.
        """
        raise NotImplementedError

    def validation_step(self, model: nn.Module, batch: Batch, metrics: MetricCollection) -> None:
        """Update ``metrics`` with one batch (the engine runs it in eval mode under inference_mode)."""
        raise NotImplementedError

    def batch_size(self, batch: Batch) -> int:
        """Number of samples in ``batch`` (to weight averages)."""
        raise NotImplementedError

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities, N x num_classes."""
        raise NotImplementedError

    def observe_training_data(self, data: Any) -> None:
        """Look at the prepared data before training (e.g. a colour prior); by default nothing."""

    def data_notes(self, model: nn.Module, data: Any) -> dict[str, Any]:
        """Fields about the prepared data as this task and model will learn it, for run.json and the data line
        (detect on a grid: the boxes that share a cell with a larger one); by default none."""
        return {}

    def callbacks(self, loaders: dict[str, Any], run_dir: Path, info: dict[str, Any]) -> list[Callback]:
        """The callbacks this task adds to training: its per-epoch figures (:attr:`figures`)."""
        return [FIGURES.get(name)(loaders, run_dir, info) for name in self.figures]

    def after_training(self, model: nn.Module, loaders: dict[str, Any], run_dir: Path, info: dict[str, Any],
                       precision: str) -> dict[str, Any]:  # fmt: skip
        """Fields for the summary measured once trained (:attr:`measure`; weakseg: masks against the truth)."""
        if self.measure is None:
            return {}
        measure: Callable[..., dict[str, Any]] = MEASURES.get(self.measure)
        return measure(self, model, loaders, run_dir, info, precision)
