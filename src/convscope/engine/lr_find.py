"""The learning-rate range test (Smith 2015, "Cyclical learning rates for training neural networks"; fastai's
``lr_find``, Lightning's ``Tuner.lr_find``): a few mini-batches of the recipe's optimiser at a constant lr per step
that grows exponentially from ``start_lr`` to ``end_lr``, the loss recorded at each.

The losses are smoothed as fastai does (an exponential moving average, beta 0.98, bias-corrected), the test stops
once the smoothed loss exceeds 4x its best (diverging) or the loss is not finite, and the suggestion is the
steepest descent of the smoothed loss against log(lr), looked for only up to the smoothed loss's minimum (so it
is never past it) and, as Lightning does, after the first few noisy steps.

The model comes back as it was given: weights, buffers (batch-norm statistics), ``requires_grad`` flags and
train/eval mode are restored, and it is moved back to its device. Nothing is written to disk here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from convscope.config import OptimConfig, TrainConfig
from convscope.engine.optim import build_optimizer, resolve_device
from convscope.engine.task import Batch, Task
from convscope.errors import UserError

RULE = "steepest descent of the smoothed loss"
SKIP_BEGIN = 10  # steps whose smoothed loss rests on too few batches to take its slope (Lightning's skip_begin)
PROGRESS_SECONDS = 10.0  # a progress line at most this often


@dataclass
class LRFindSettings:
    start_lr: float = 1e-7
    end_lr: float = 10.0
    steps: int = 100  # at most; fewer when the loss diverges
    beta: float = 0.98  # smoothing of the loss (fastai's)
    diverge_factor: float = 4.0  # stop when the smoothed loss exceeds this times its best

    def __post_init__(self) -> None:
        if not 0 < self.start_lr < self.end_lr:
            raise UserError(
                f"lr-find: --start-lr {self.start_lr:g} and --end-lr {self.end_lr:g}: expected 0 < start < end"
            )
        if self.steps < 2:
            raise UserError(f"lr-find: --steps {self.steps}: expected at least 2 steps")
        if not 0 <= self.beta < 1:
            raise UserError(f"lr-find: beta = {self.beta}: expected a number in [0, 1)")
        if not self.diverge_factor > 1:
            raise UserError(f"lr-find: diverge_factor = {self.diverge_factor}: expected a number > 1")

    def lr_at(self, step: int) -> float:
        """The lr of step ``step`` (0-based): start at step 0, end at step ``steps - 1``, geometric between."""
        return self.start_lr * (self.end_lr / self.start_lr) ** (step / (self.steps - 1))


@dataclass
class LRFindResult:
    lrs: list[float]  # optim.lr at each step run (other param groups keep their ratio to it)
    losses: list[float]  # the raw loss of each step
    smoothed: list[float]  # its bias-corrected exponential moving average
    minimum: int  # index of the smallest smoothed loss
    suggestion_index: int | None  # None when the smoothed loss never fell
    stop_reason: str | None  # why the test ended before its last step, if it did
    seconds: float

    @property
    def suggestion(self) -> float | None:
        return None if self.suggestion_index is None else self.lrs[self.suggestion_index]


def suggest(lrs: Sequence[float], smoothed: Sequence[float], skip_begin: int = SKIP_BEGIN) -> int | None:
    """Index of the steepest descent of ``smoothed`` against log10(lr), among the steps up to the smoothed loss's
    minimum (after the first ``skip_begin`` when enough remain); None when the loss never fell below its start."""
    minimum = int(np.argmin(smoothed))
    if minimum == 0:
        return None
    # Central differences over the whole curve, so the slope at a step weighs both its neighbours.
    slopes = np.gradient(np.asarray(smoothed), np.log10(lrs))
    start = skip_begin if minimum - skip_begin >= 2 else 0
    return start + int(np.argmin(slopes[start:minimum]))


def find_lr(
    model: nn.Module,
    task: Task,
    optim: OptimConfig,
    train: TrainConfig,
    loader: Any,
    *,
    settings: LRFindSettings | None = None,
    param_groups: Iterable[dict[str, Any]] | None = None,
    in_eval: Sequence[nn.Module] = (),
    say: Callable[[str], None] | None = None,
) -> LRFindResult:
    """Run the range test on ``model`` with batches of ``loader`` (a training loader: ``set_epoch`` and
    iteration, cycled over epochs when it has fewer batches than steps).

    The optimiser is ``optim``'s (momentum, weight decay, Muon's split: as in training) with its schedule ignored;
    at each step every param group's lr is its own lr times ``lr / optim.lr``, so groups at other rates (Muon's
    ``linear_lr`` and ``bias_lr``, discriminative fine-tuning) keep their ratios to ``optim.lr`` and the lrs
    recorded are ``optim.lr``'s. ``train`` gives the device, precision (bf16 autocast), memory format and gradient
    clipping. ``in_eval`` modules stay in eval mode (a frozen backbone). ``say`` gets a progress line every 10 s.
    """
    settings = settings or LRFindSettings()
    device = resolve_device(train.device)
    saved = _Saved(model)
    try:
        memory_format = torch.channels_last if train.channels_last else torch.preserve_format
        model.to(device=device, memory_format=memory_format)
        optimizer = build_optimizer(optim, param_groups if param_groups is not None else model.parameters())
        ratios = [group["lr"] / optim.lr for group in optimizer.param_groups]
        params = [p for group in optimizer.param_groups for p in group["params"]]
        model.train()
        for module in in_eval:
            module.eval()
        lrs: list[float] = []
        losses: list[float] = []
        smoothed: list[float] = []
        stop_reason = None
        started = last_said = time.perf_counter()
        avg = 0.0
        for step, batch in zip(range(settings.steps), _cycle(loader), strict=False):
            lr = settings.lr_at(step)
            for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
                group["lr"] = lr * ratio
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=train.precision == "bf16"):
                loss, _ = task.training_step(model, _to_device(batch, device, train.channels_last))
            value = float(loss.detach())
            if not math.isfinite(value):
                stop_reason = f"the loss became {value} at lr {lr:.3g}"
                break
            loss.backward()
            if train.grad_clip:
                nn.utils.clip_grad_norm_(params, train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            avg = settings.beta * avg + (1 - settings.beta) * value
            lrs.append(lr)
            losses.append(value)
            smoothed.append(avg / (1 - settings.beta ** (step + 1)))
            if say is not None and time.perf_counter() - last_said >= PROGRESS_SECONDS:
                say(f"lr-find: step {step + 1}/{settings.steps}, lr {lr:.3g}, smoothed loss {smoothed[-1]:.4f}")
                last_said = time.perf_counter()
            if step > 0 and smoothed[-1] > settings.diverge_factor * min(smoothed):
                stop_reason = (
                    f"the smoothed loss exceeded {settings.diverge_factor:g}x its best at lr {lr:.3g} (diverging)"
                )
                break
        if not lrs:
            problem = "gives no batches" if stop_reason is None else f"gave a non-finite loss at once ({stop_reason})"
            raise UserError(f"lr-find: the training data {problem}; check the data, model and train.batch_size")
        return LRFindResult(
            lrs=lrs,
            losses=losses,
            smoothed=smoothed,
            minimum=int(np.argmin(smoothed)),
            suggestion_index=suggest(lrs, smoothed),
            stop_reason=stop_reason,
            seconds=time.perf_counter() - started,
        )
    finally:
        saved.restore(model)


class _Saved:
    """What the test changes on a model, kept to be put back: state (on the CPU), flags, modes, device."""

    def __init__(self, model: nn.Module) -> None:
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.requires_grad = [p.requires_grad for p in model.parameters()]
        self.training = [m.training for m in model.modules()]
        first = next(model.parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.state)  # copies into the parameters, wherever they are
        for parameter, flag in zip(model.parameters(), self.requires_grad, strict=True):
            parameter.requires_grad_(flag)
            parameter.grad = None
        for module, training in zip(model.modules(), self.training, strict=True):
            module.training = training
        model.to(self.device)


def _cycle(loader: Any) -> Iterator[Batch]:
    """The loader's batches, epoch after epoch (positioned by ``set_epoch`` as the trainer does)."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            return
        epoch += 1


def _to_device(batch: Batch, device: torch.device, channels_last: bool) -> Batch:
    """As the trainer moves a batch: tensors to ``device``, image batches channels-last when asked."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.dim() == 4 and batch.is_floating_point():
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, tuple | list):
        return type(batch)(_to_device(b, device, channels_last) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device, channels_last) for k, v in batch.items()}
    return batch
