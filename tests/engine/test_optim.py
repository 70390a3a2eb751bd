import itertools
import math

import pytest
import torch
from torch import nn

from convscope.engine import OptimConfig, build_optimizer, build_scheduler
from convscope.engine.optim import current_lr_momentum
from convscope.errors import UserError


def _schedule(cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> tuple[list[float], list[float]]:
    """lr and momentum used by each step."""
    optimizer = build_optimizer(cfg, nn.Linear(2, 1).parameters())
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch, epochs)
    lrs, moms = [], []
    for _ in range(steps_per_epoch * epochs):
        lr, mom = current_lr_momentum(optimizer)
        lrs.append(lr)
        moms.append(mom)
        optimizer.step()
        scheduler.step()
    return lrs, moms


@pytest.mark.parametrize(
    ("name", "cls"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_optimizers_and_param_groups(name, cls):
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    groups = [{"params": model[0].parameters(), "lr": 1e-4}, {"params": model[1].parameters()}]
    opt = build_optimizer(OptimConfig(name=name, lr=1e-2, momentum=0.8, weight_decay=0.1), groups)
    assert isinstance(opt, cls)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-2]
    assert current_lr_momentum(opt) == (1e-4, 0.8)


def test_sgd_nesterov():
    opt = build_optimizer(OptimConfig(name="sgd", nesterov=True), nn.Linear(2, 1).parameters())
    assert opt.param_groups[0]["nesterov"] is True


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_onecycle_lr_and_momentum_shape(name):
    cfg = OptimConfig(name=name, lr=0.1, scheduler="onecycle", pct_start=0.25, div_factor=10, final_div_factor=100)
    lrs, moms = _schedule(cfg, steps_per_epoch=10, epochs=4)
    peak = lrs.index(max(lrs))
    assert lrs[0] == pytest.approx(0.01)
    assert max(lrs) == pytest.approx(0.1, rel=1e-3)
    assert 8 <= peak <= 10  # 25% of 40 steps
    assert lrs[-1] < 0.01 / 100 * 1.5
    assert all(a <= b for a, b in itertools.pairwise(lrs[: peak + 1]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[peak:]))
    # Momentum (SGD momentum or Adam beta1) mirrors the lr: 0.95 -> 0.85 at the peak -> back up.
    assert moms[0] == pytest.approx(0.95)
    assert moms[peak] == pytest.approx(0.85, abs=1e-3)
    assert moms[-1] == pytest.approx(0.95, abs=1e-3)


def test_onecycle_per_group_peaks():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    cfg = OptimConfig(lr=0.1, scheduler="onecycle")
    opt = build_optimizer(cfg, [{"params": model[0].parameters(), "lr": 0.01}, {"params": model[1].parameters()}])
    sched = build_scheduler(cfg, opt, 10, 1)
    assert [g["max_lr"] for g in opt.param_groups] == [0.01, 0.1]
    assert sched is not None


def test_cosine_with_warmup():
    lrs, _ = _schedule(OptimConfig(name="sgd", lr=1.0, scheduler="cosine", warmup_fraction=0.1), 10, 5)
    assert lrs[:6] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    assert lrs[5 + 22] == pytest.approx(0.5 * (1 + math.cos(math.pi * 22 / 45)))
    assert lrs[-1] < 0.01


def test_cosine_without_warmup_starts_at_lr():
    lrs, _ = _schedule(OptimConfig(lr=1.0, scheduler="cosine"), 10, 2)
    assert lrs[0] == 1.0
    assert lrs[10] == pytest.approx(0.5)


@pytest.mark.parametrize("warmup", [0.0, 0.1])
def test_step_decays_at_epoch_boundaries(warmup):
    lrs, _ = _schedule(OptimConfig(lr=1.0, scheduler="step", step_epochs=2, gamma=0.5, warmup_fraction=warmup), 5, 6)
    assert lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(0.5)
    assert lrs[19] == pytest.approx(0.5)
    assert lrs[20] == pytest.approx(0.25)
    if warmup:
        assert lrs[0] == pytest.approx(1 / 4)


def test_step_warmup_past_first_decay_is_refused():
    cfg = OptimConfig(scheduler="step", step_epochs=1, warmup_fraction=0.5)
    with pytest.raises(UserError, match=r"optim.warmup_fraction"):
        build_scheduler(cfg, build_optimizer(cfg, nn.Linear(2, 1).parameters()), 10, 3)


def test_no_scheduler():
    cfg = OptimConfig()
    assert build_scheduler(cfg, build_optimizer(cfg, nn.Linear(2, 1).parameters()), 10, 3) is None
