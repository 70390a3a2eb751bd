"""Stopping a phase whose loss has diverged, so that a run never keeps a diverged model.

The rule, checked after every step: the loss is not finite, or its moving average over the last ``window`` steps
(fewer at the start of the phase) is more than ``factor`` times the lower of the phase's first loss and the lowest
full-window average so far, and above that first loss. The first loss is the one of the weights the phase was given,
before any update. Requiring a rise above it keeps the ordinary course of training (a loss falling from ln C, then
rising a little when a schedule peaks) from counting: only a phase that climbs back above where it began, far above
the best it reached, is stopped. Fine-tuning that destroys the weights it was given (a loss of 0.3 growing to 1e17)
is caught within a few steps.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from convscope.engine.callbacks import Callback, StopTraining

if TYPE_CHECKING:
    from convscope.engine.trainer import Trainer

# The moving average spans at least this many steps, so one noisy batch cannot stop a phase.
MIN_WINDOW = 10


class Diverged(StopTraining):
    """Training stopped because the loss diverged; ``step`` and ``loss`` say where."""

    def __init__(self, reason: str, step: int, loss: float) -> None:
        super().__init__(reason)
        self.reason, self.step, self.loss = reason, step, loss


class DivergenceGuard(Callback):
    """Raises :class:`Diverged` by the rule above; ``factor = 0`` keeps only the non-finite check."""

    order = -10  # before callbacks that would record the diverged step as progress

    def __init__(self, factor: float, steps_per_epoch: int) -> None:
        self.factor = factor
        self.window = max(MIN_WINDOW, round(0.05 * steps_per_epoch))
        self.first: float | None = None  # the phase's first loss: its given weights, before any update
        self.best: float | None = None  # the lowest full-window moving average

    def on_train_batch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        loss, step = logs["loss"], trainer.global_step
        if not math.isfinite(loss):
            raise Diverged(f"the loss became {loss} at step {step}", step, loss)
        if self.first is None:
            self.first = loss
        if not self.factor:
            return
        recent = [row["loss"] for row in trainer.history.train[-self.window :]]
        average = sum(recent) / len(recent)
        if len(recent) == self.window and (self.best is None or average < self.best):
            self.best = average
        if not self.healthy(average):
            reference = self.first if self.best is None else min(self.first, self.best)
            raise Diverged(
                f"the loss's moving average over {len(recent)} steps rose to {average:.4g} at step {step}, more "
                f"than {self.factor:g}x its best ({reference:.4g}) and above its start ({self.first:.4g})",
                step,
                average,
            )

    def healthy(self, loss: float | None) -> bool:
        """Whether a loss (a moving average, or an epoch's mean: a checkpoint written after the loss had started
        to climb, but before the window caught it, is not a good one to go back to) is not diverged by the rule."""
        if loss is None or not math.isfinite(loss):
            return False
        if not self.factor or self.first is None:
            return True
        reference = self.first if self.best is None else min(self.first, self.best)
        return not (loss > self.factor * reference and loss > self.first)

    def state_dict(self) -> dict[str, Any]:
        return {"first": self.first, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first, self.best = state["first"], state["best"]
