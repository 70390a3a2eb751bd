"""Transfer learning in two phases (seed 004): train the head on a frozen backbone, then fine-tune everything
with a 10x smaller learning rate, optionally smaller still for earlier layers (discriminative fine-tuning).

Each phase is its own ``Trainer.fit`` with a new optimiser and schedule, as the seed ran it: phase 1 keeps its
checkpoints and ``metrics.csv`` in ``RUN_DIR/phase1``, phase 2 in the run directory itself. A resumed run
resumes phase 1 (a finished phase 1 just restores its last weights) and then phase 2 from its own
checkpoint, so exact resume holds across the switch. The frozen part runs in eval mode during phase 1, so
its batch-norm statistics stay those of the weights it was given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from convscope.config import OptimConfig, TrainConfig, TransferConfig
from convscope.engine.callbacks import Callback
from convscope.engine.history import History
from convscope.engine.task import Batch, Task
from convscope.engine.trainer import Loader, Trainer
from convscope.errors import UserError

PHASE1_DIR = "phase1"


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    frozen: bool  # the backbone is frozen
    lr_factor: float  # of optim.lr
    run_dir: Path | None


def plan_phases(transfer: TransferConfig, epochs: int, run_dir: Path | None) -> list[Phase]:
    """One phase (everything trains) or two (frozen, then fine-tuning); the last one writes to ``run_dir``."""
    frozen = transfer.frozen_epochs(epochs)
    if frozen == 0:
        return [Phase("train", epochs, False, 1.0, run_dir)]
    if frozen == epochs:
        return [Phase("frozen", epochs, True, 1.0, run_dir)]
    return [
        Phase("frozen", frozen, True, 1.0, run_dir / PHASE1_DIR if run_dir is not None else None),
        Phase("fine-tune", epochs - frozen, False, transfer.finetune_lr_factor, run_dir),
    ]


def backbone_of(model: nn.Module) -> nn.Module:
    """What phase 1 freezes: ``model.backbone()`` for convscope models."""
    if not hasattr(model, "backbone"):
        raise UserError(f"{type(model).__name__} has no backbone()/features to freeze; use a convscope model")
    return model.backbone()


def set_frozen(module: nn.Module, frozen: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(not frozen)


class FrozenInEval(Callback):
    """Keeps a frozen part in eval mode while the rest trains: batch norms keep their running statistics
    (and normalise with them), dropout stays off. Called at every epoch start, resumed ones included."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        self.module.eval()


class BatchNormInEval(Callback):
    """Keeps the batch norms of a training module in eval mode: their weights still learn, their running
    statistics stay put and normalise every batch. Called at every epoch start, resumed ones included."""

    def __init__(self, module: nn.Module) -> None:
        self.norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        for norm in self.norms:
            norm.eval()


def discriminative_groups(model: nn.Module, lr: float, decay: float) -> list[dict[str, Any]]:
    """Param groups: the backbone's stages (its children with parameters, input first) at ``lr * decay**k`` for
    the k-th stage from the top, everything else (the head, new layers) at ``lr``."""
    stages = [child for child in backbone_of(model).children() if any(True for _ in child.parameters())]
    in_stages = {id(p) for stage in stages for p in stage.parameters()}
    groups = [
        {"params": list(stage.parameters()), "lr": lr * decay ** (len(stages) - i)} for i, stage in enumerate(stages)
    ]
    rest = [p for p in model.parameters() if id(p) not in in_stages]
    return [*groups, {"params": rest, "lr": lr}] if rest else groups


@dataclass
class PhaseResult:
    phase: Phase
    trainer: Trainer
    history: History


def train_in_phases(
    model: nn.Module,
    task: Task,
    optim: OptimConfig,
    train: TrainConfig,
    transfer: TransferConfig,
    *,
    run_dir: Path | None,
    train_loader: Loader,
    valid_loader: Iterable[Batch] | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    checkpoint_extra: dict[str, Any] | None = None,
    say: Callable[[str], None] = print,
) -> list[PhaseResult]:
    """Fit ``model`` through its phases; the last result's trainer holds the final model and checkpoints."""
    phases = plan_phases(transfer, train.epochs, run_dir)
    results = []
    for index, phase in enumerate(phases):
        needs_backbone = phase.frozen or transfer.layer_lr_decay < 1 or transfer.freeze_bn_stats
        backbone = backbone_of(model) if needs_backbone else None
        if backbone is not None:
            set_frozen(backbone, phase.frozen)
        phase_optim = dataclasses.replace(optim, lr=optim.lr * phase.lr_factor)
        if phase.frozen:
            groups: Iterable[Any] = [p for p in model.parameters() if p.requires_grad]
        elif transfer.layer_lr_decay < 1:
            groups = discriminative_groups(model, phase_optim.lr, transfer.layer_lr_decay)
        else:
            groups = model.parameters()
        in_eval: list[Callback] = []
        if backbone is not None and phase.frozen:
            in_eval = [FrozenInEval(backbone)]
        elif backbone is not None and transfer.freeze_bn_stats:
            in_eval = [BatchNormInEval(backbone)]
        trainer = Trainer(
            model,
            task,
            phase_optim,
            dataclasses.replace(train, epochs=phase.epochs),
            run_dir=phase.run_dir,
            callbacks=[*callbacks, *in_eval],
            param_groups=groups,
            checkpoint_extra={**(checkpoint_extra or {}), "phase": phase.name},
        )
        if len(phases) > 1:
            say(f"phase {index + 1}/{len(phases)} ({phase.name}): {phase.epochs} epochs, lr {phase_optim.lr:g}"
                + (", backbone frozen" if phase.frozen else ""))  # fmt: skip
        # A phase resumes from its own checkpoint; one that never started (killed before it) starts afresh.
        has_checkpoint = phase.run_dir is not None and (phase.run_dir / "checkpoints" / "last.pt").is_file()
        history = trainer.fit(train_loader, valid_loader, resume=resume and (has_checkpoint or index == 0))
        if phase.frozen and backbone is not None:
            set_frozen(backbone, False)
        results.append(PhaseResult(phase, trainer, history))
        if trainer.diverged is not None:  # the phases after it would start from a model that is not the result
            if phase.lr_factor != 1.0:
                say(f"note: phase {index + 1} ran at optim.lr x transfer.finetune_lr_factor = {phase_optim.lr:g}; "
                    f"a smaller factor (--set transfer.finetune_lr_factor={phase.lr_factor / 10:g}) keeps more of "
                    "the weights it was given")  # fmt: skip
            break
    return results


def combined_history(results: Sequence[PhaseResult]) -> History:
    """The phases' epochs one after the other (for a run's summary: epochs, time, best validation)."""
    return History(
        train=[row for r in results for row in r.history.train],
        valid=[row for r in results for row in r.history.valid],
        train_seconds=sum(r.history.train_seconds for r in results),
        best=results[-1].history.best,
    )
