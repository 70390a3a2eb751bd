"""Callbacks: a few named events with no-op defaults (the fastai / Lightning pattern, kept narrow).

The trainer calls callbacks in ascending ``order``. A callback that keeps state across steps
returns it from ``state_dict()`` (plain lists, dicts, numbers, strings, tensors) so that a resumed
run restores it from the checkpoint. Raising :class:`StopTraining` from any event ends ``fit``
cleanly: the trainer finishes the event for the other callbacks and writes a final checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convscope.config import EARLY_STOPPING_ALIASES, MONITOR_MODES
from convscope.errors import UserError

if TYPE_CHECKING:
    from convscope.engine.trainer import Trainer


def is_better(value: float, than: float | None, mode: str) -> bool:
    """Whether ``value`` beats ``than`` (None or NaN: nothing to beat yet) for ``mode`` max or min."""
    if than is None or math.isnan(than):
        return True
    return value > than if mode == "max" else value < than


def monitored(metrics: dict[str, float], monitor: str) -> float:
    """``metrics[monitor]``, or a UserError listing the metrics there are."""
    if monitor not in metrics:
        raise UserError(f"train.monitor = {monitor!r} is not a validation metric; one of: {', '.join(metrics)}")
    return metrics[monitor]


class StopTraining(Exception):
    """Raised by a callback to end training after the current step or epoch."""


class Callback:
    order: int = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        """Once per ``fit``, after a resume has restored the state."""

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        """Before each training pass (also a resumed one), once the model is in training mode."""

    def on_train_batch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        """After each optimisation step; ``logs`` is the step's row (loss, task values, averages, lr, momentum)."""

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """After the end-of-epoch evaluation (not called when there is no validation loader)."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        """After each epoch; ``row`` holds the validation metrics, the epoch's train averages and its seconds."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """Once, when ``fit`` returns (also after StopTraining)."""

    def figures(self) -> dict[str, Path]:
        """The image files this callback drew at the epoch end just past, by name: loggers (TensorBoard) show them."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class ScheduleTracker(Callback):
    """lr and momentum (SGD momentum or Adam beta1) of param group 0 at every step (seed 004's SchedulerStatsCallback).

    It records the values the step used, so ``lr[0]`` is the schedule's first lr.
    """

    def __init__(self) -> None:
        self.lr: list[float] = []
        self.momentum: list[float] = []

    def on_train_batch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        self.lr.append(logs["lr"])
        self.momentum.append(logs["momentum"])

    def state_dict(self) -> dict[str, Any]:
        return {"lr": list(self.lr), "momentum": list(self.momentum)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr = list(state["lr"])
        self.momentum = list(state["momentum"])


class EarlyStopping(Callback):
    """Stop when the monitored validation value stops improving.

    ``rule = "first-drop"`` (old name ``"seed001"``): stop as soon as it is worse than the previous epoch's (seed
    001's loop).
    ``rule = "patience"``: stop after ``patience`` epochs without beating the best value so far.
    """

    RULES = ("first-drop", "patience")

    def __init__(self, monitor: str, mode: str = "max", rule: str = "patience", patience: int = 3) -> None:
        rule = EARLY_STOPPING_ALIASES.get(rule, rule)
        if rule not in self.RULES:
            raise UserError(f"train.early_stopping = {rule!r} is not one of: none, {', '.join(self.RULES)}")
        if mode not in MONITOR_MODES:
            raise UserError(f"train.monitor_mode = {mode!r} is not one of: {', '.join(MONITOR_MODES)}")
        self.monitor, self.mode, self.rule, self.patience = monitor, mode, rule, patience
        self.previous = math.nan
        self.best = math.nan
        self.bad_epochs = 0

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        value = monitored(metrics, self.monitor)
        worse_than_previous = not math.isnan(self.previous) and is_better(self.previous, value, self.mode)
        self.previous = value
        if is_better(value, self.best, self.mode):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.rule == "first-drop" and worse_than_previous:
            raise StopTraining(f"{self.monitor} got worse than the previous epoch's")
        if self.rule == "patience" and self.bad_epochs >= self.patience:
            raise StopTraining(f"{self.monitor} did not improve for {self.bad_epochs} epochs")

    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.previous, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous, self.best, self.bad_epochs = state["previous"], state["best"], state["bad_epochs"]
