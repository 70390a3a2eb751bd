"""A diverging phase stops, and the model kept is never the diverged one."""

from __future__ import annotations

import math

import pytest
import torch

from convscope.config import TransferConfig
from convscope.engine import Callback, OptimConfig, load_checkpoint
from convscope.engine.divergence import Diverged, DivergenceGuard
from convscope.engine.finetune import train_in_phases
from tests.engine.helpers import ToyTask, loaders, make_trainer, tiny_model


class BlowUp(Callback):
    """From global step ``at`` on, every step throws the weights far off (an lr gone wrong): the loss climbs."""

    def __init__(self, at: int, scale: float = 30.0) -> None:
        self.at, self.scale = at, scale

    def on_train_batch_end(self, trainer, logs) -> None:
        if trainer.global_step >= self.at:
            generator = torch.Generator().manual_seed(trainer.global_step)
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.add_(torch.randn(p.shape, generator=generator) * self.scale)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_diverging_phase_stops_and_keeps_the_best_checkpoint(tmp_path, capsys):
    trainer = make_trainer(tmp_path, epochs=6, callbacks=[BlowUp(at=13)], optim=OptimConfig(name="sgd", lr=0.05))
    trainer.fit(*loaders())
    assert trainer.diverged is not None and trainer.epoch < 6
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert same(weights(trainer.model), best["model"])
    assert all(torch.isfinite(v).all() for v in best["model"].values() if v.is_floating_point())
    assert "the best weights so far" in trainer.diverged["kept"]
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["stopped"] and last["diverged"]["step"] == trainer.diverged["step"]
    out = capsys.readouterr().out
    assert "warning: training diverged" in out and "--lr 0.005" in out
    # The kept model still classifies: it is the one trained before the blow-up.
    valid = trainer.evaluate(loaders()[1])
    assert valid["accuracy"] > 0.6


def test_diverging_before_any_checkpoint_keeps_the_starting_weights(tmp_path):
    trainer = make_trainer(tmp_path, epochs=3, callbacks=[BlowUp(at=1)], optim=OptimConfig(lr=0.05))
    start = weights(trainer.model)
    trainer.fit(*loaders())
    assert trainer.diverged is not None and trainer.diverged["kept"] == "the weights this phase started from"
    assert same(weights(trainer.model), start)
    trainer.load_best()  # what api.train keeps
    assert same(weights(trainer.model), start)


def test_a_resumed_diverged_run_stays_stopped(tmp_path):
    make_trainer(tmp_path, epochs=3, callbacks=[BlowUp(at=1)], optim=OptimConfig(lr=0.05)).fit(*loaders())
    again = make_trainer(tmp_path, epochs=3, callbacks=[BlowUp(at=1)], optim=OptimConfig(lr=0.05))
    again.fit(*loaders(), resume=True)
    assert again.diverged is not None


def test_a_non_finite_loss_is_a_divergence_not_a_crash(tmp_path):
    class Exploding(Callback):
        def on_fit_start(self, trainer) -> None:
            with torch.no_grad():
                trainer.model[-1].bias.fill_(float("inf"))

    trainer = make_trainer(tmp_path, callbacks=[Exploding()])
    trainer.fit(*loaders())
    assert trainer.diverged is not None and "the loss became nan at step 1" in trainer.diverged["reason"]


def test_ordinary_training_never_counts_as_diverged(tmp_path):
    # One cycle at a high peak: the loss rises while the rate peaks, but never back above where it started.
    trainer = make_trainer(tmp_path, epochs=8, optim=OptimConfig(name="sgd", lr=0.5, scheduler="onecycle"))
    trainer.fit(*loaders())
    assert trainer.diverged is None and trainer.epoch == 8


class Logs:
    """A stand-in trainer for the guard: a history of losses and a step counter."""

    def __init__(self) -> None:
        self.history = type("H", (), {"train": []})()
        self.global_step = 0

    def step(self, guard: DivergenceGuard, loss: float) -> None:
        self.global_step += 1
        self.history.train.append({"loss": loss})
        guard.on_train_batch_end(self, {"loss": loss})


def test_the_rule_needs_both_a_rise_over_the_best_and_over_the_start():
    guard, logs = DivergenceGuard(4.0, steps_per_epoch=20), Logs()
    for loss in [2.0] * 10 + [0.2] * 20 + [1.5] * 20:  # 7.5x the best, still below the start: not diverged
        logs.step(guard, loss)
    with pytest.raises(Diverged, match="more than 4x its best"):
        for loss in [3.0] * 10:
            logs.step(guard, loss)


def test_factor_zero_keeps_only_the_non_finite_check():
    guard, logs = DivergenceGuard(0.0, steps_per_epoch=20), Logs()
    for loss in [0.1] * 10 + [1e6] * 20:
        logs.step(guard, loss)
    with pytest.raises(Diverged, match="inf"):
        logs.step(guard, math.inf)


def test_transfer_stops_at_a_diverged_fine_tuning_phase_and_keeps_phase_one(tmp_path, capsys):
    model = tiny_model()
    model.backbone = lambda: model[:3]  # the conv stage is what phase 1 freezes
    train_loader, valid_loader = loaders()
    results = train_in_phases(
        model,
        ToyTask(),
        OptimConfig(name="sgd", lr=0.05),
        make_trainer(epochs=4).train_config,
        TransferConfig(freeze_epochs=2, finetune_lr_factor=1e6),
        run_dir=tmp_path,
        train_loader=train_loader,
        valid_loader=valid_loader,
    )
    assert len(results) == 2 and results[1].trainer.diverged is not None
    assert "the weights this phase started from" in results[1].trainer.diverged["kept"]
    phase1 = load_checkpoint(tmp_path / "phase1" / "checkpoints" / "last.pt")["model"]
    assert same(weights(model), phase1)
    assert "transfer.finetune_lr_factor=" in capsys.readouterr().out


def test_without_validation_the_best_epoch_follows_the_training_loss(tmp_path):
    trainer = make_trainer(tmp_path, epochs=3)
    trainer.fit(loaders()[0])
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    losses = [row["train_loss"] for row in trainer.history.valid]
    assert best["metrics"]["train_loss"] == min(losses)
