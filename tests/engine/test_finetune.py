"""Two-phase fine-tuning: a frozen backbone (weights and batch-norm statistics), a 10x smaller lr after the
switch, per-stage learning rates, and exact resume across the switch."""

from pathlib import Path

import pytest
import torch
from torch import nn

from convscope.config import TransferConfig
from convscope.engine import Callback, OptimConfig, TrainConfig, load_checkpoint
from convscope.engine.finetune import discriminative_groups, plan_phases, train_in_phases
from convscope.errors import UserError
from convscope.models.layers import ConvNet

from . import helpers
from .helpers import Crash, CrashAt


def toy_convnet() -> ConvNet:
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1))
    head = nn.Sequential(nn.Dropout(0.2), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, helpers.NUM_CLASSES))
    return ConvNet(features, head)


TRANSFER = TransferConfig(freeze_epochs=1, finetune_lr_factor=0.1)


def fit(run_dir: Path | None, *, resume: bool = False, callbacks=(), transfer=TRANSFER, model=None, **train):
    model = model or toy_convnet()
    train_loader, valid_loader = helpers.loaders()
    settings = {"epochs": 3, "device": "cpu", "quiet": True, "checkpoint_every": 4, **train}
    with helpers.one_thread():
        results = train_in_phases(
            model, helpers.ToyTask(), OptimConfig(name="sgd", lr=0.05, scheduler="onecycle"),
            TrainConfig(**settings), transfer, run_dir=run_dir, train_loader=train_loader,
            valid_loader=valid_loader, resume=resume, callbacks=callbacks, say=lambda _: None,
        )  # fmt: skip
    return model, results


def test_phases_from_the_recipe(tmp_path: Path) -> None:
    assert [(p.name, p.epochs, p.lr_factor) for p in plan_phases(TransferConfig(), 5, tmp_path)] == [("train", 5, 1.0)]
    frozen, tune = plan_phases(TransferConfig(unfreeze_at=0.5), 10, tmp_path)
    assert (frozen.epochs, frozen.frozen, frozen.run_dir) == (5, True, tmp_path / "phase1")
    assert (tune.epochs, tune.frozen, tune.lr_factor, tune.run_dir) == (5, False, 0.1, tmp_path)
    with pytest.raises(UserError, match=r"more than train\.epochs"):
        plan_phases(TransferConfig(freeze_epochs=4), 3, tmp_path)
    with pytest.raises(UserError, match="both set"):
        TransferConfig(freeze_epochs=2, unfreeze_at=0.5)


class Snapshot(Callback):
    """The body's weights and batch-norm statistics at the end of each epoch, and each step's lr."""

    def __init__(self, model: ConvNet) -> None:
        self.model, self.states, self.lrs = model, [], []

    def on_train_batch_end(self, trainer, logs) -> None:
        self.lrs.append(logs["lr"])

    def on_epoch_end(self, trainer, row) -> None:
        self.states.append({k: v.clone() for k, v in self.model.features.state_dict().items()})


def test_frozen_phase_keeps_the_body_and_its_statistics_then_fine_tunes_at_a_tenth(tmp_path: Path) -> None:
    model = toy_convnet()
    start = {k: v.clone() for k, v in model.features.state_dict().items()}
    head_start = model.head[3].weight.clone()
    snapshot = Snapshot(model)
    _, results = fit(tmp_path / "run", model=model, callbacks=[snapshot])
    after_phase1 = snapshot.states[0]
    for key, value in start.items():
        assert torch.equal(after_phase1[key], value), key  # weights, running mean/var, batches tracked
    assert not torch.equal(snapshot.states[-1]["0.weight"], start["0.weight"])  # phase 2 trains the body
    assert not torch.equal(snapshot.states[-1]["1.running_mean"], start["1.running_mean"])
    assert not torch.equal(model.head[3].weight, head_start)
    assert all(p.requires_grad for p in model.parameters())
    steps = 6  # per epoch
    assert max(snapshot.lrs[steps:]) == pytest.approx(0.1 * max(snapshot.lrs[:steps]), rel=0.05)
    assert [r.phase.name for r in results] == ["frozen", "fine-tune"]
    assert (tmp_path / "run" / "phase1" / "checkpoints" / "last.pt").is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_frozen_bn_statistics_stay_put_while_the_body_fine_tunes(tmp_path: Path) -> None:
    model = toy_convnet()
    start = {k: v.clone() for k, v in model.features.state_dict().items()}
    snapshot = Snapshot(model)
    frozen_statistics = TransferConfig(freeze_epochs=1, freeze_bn_stats=True)
    fit(tmp_path / "run", model=model, callbacks=[snapshot], transfer=frozen_statistics)
    end = snapshot.states[-1]
    assert torch.equal(end["1.running_mean"], start["1.running_mean"])
    assert torch.equal(end["1.running_var"], start["1.running_var"])
    assert not torch.equal(end["1.weight"], start["1.weight"])  # the batch norm's affine part still learns
    assert not torch.equal(end["0.weight"], start["0.weight"])


def test_discriminative_groups_slow_down_earlier_stages() -> None:
    model = toy_convnet()
    groups = discriminative_groups(model, 0.1, 0.5)
    assert [g["lr"] for g in groups] == pytest.approx([0.0125, 0.025, 0.05, 0.1])  # conv, bn, conv, head
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.mark.parametrize(("phase_dir", "crash_at"), [("phase1", 5), (".", 3), (".", 9)],
                         ids=["in-phase-1", "early-phase-2", "late-phase-2"])  # fmt: skip
def test_resume_across_the_phase_switch_is_exact(tmp_path: Path, phase_dir: str, crash_at: int) -> None:
    reference, _ = fit(tmp_path / "reference")
    run = tmp_path / "run"

    class CrashInPhase(CrashAt):
        def on_train_batch_end(self, trainer, logs) -> None:
            if trainer.run_dir == run / phase_dir:
                super().on_train_batch_end(trainer, logs)

    with pytest.raises(Crash):
        fit(run, callbacks=[CrashInPhase(crash_at)])
    resumed, _ = fit(run, resume=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    got = load_checkpoint(run / "checkpoints" / "last.pt")
    want = load_checkpoint(tmp_path / "reference" / "checkpoints" / "last.pt")
    untimed = [[{k: v for k, v in row.items() if k != "seconds"} for row in c["history"]["valid"]] for c in (got, want)]
    assert untimed[0] == untimed[1]
