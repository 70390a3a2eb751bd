import pytest
import torch
from torch import nn

from convscope.engine import OptimConfig, build_optimizer, build_scheduler
from convscope.engine.muon import MuonSGD
from convscope.engine.optim import current_lr_momentum
from tests.engine import helpers

MUON = {"name": "muon", "lr": 0.2, "linear_lr": 3.0, "bias_lr": 0.5, "momentum": 0.85, "nesterov": True}


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3, bias=False), nn.BatchNorm2d(6), nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(2, 2, 5, 5))
    return model


def test_groups_split_by_rank_with_their_rates_and_decoupled_decay():
    model = _model()
    model[1].weight.requires_grad_(False)  # frozen parameters are left out
    opt = build_optimizer(OptimConfig(**MUON, weight_decay=0.01, muon_momentum=0.5), model.parameters())
    assert isinstance(opt, MuonSGD)
    filters, linear, bias = opt.param_groups
    assert filters["muon"] and filters["params"] == [model[0].weight]
    assert (filters["lr"], filters["momentum"]) == (0.2, 0.5)
    assert linear["params"] == [model[3].weight] and linear["lr"] == 3.0
    assert bias["params"] == [model[1].bias, model[3].bias] and bias["lr"] == 0.5
    # torch's SGD takes lr * weight_decay per step: the configured fraction in every group.
    assert linear["lr"] * linear["weight_decay"] == pytest.approx(0.01)
    assert bias["lr"] * bias["weight_decay"] == pytest.approx(0.01)
    assert current_lr_momentum(opt) == (0.2, 0.5)  # the filters' lr is the one logged


def test_a_group_lr_scales_all_three_rates():
    model = _model()
    groups = [{"params": model[0].parameters(), "lr": 0.02}, {"params": list(model[1:].parameters())}]
    opt = build_optimizer(OptimConfig(**MUON), groups)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02, 3.0, 0.5])


def test_muon_step_renormalises_then_takes_an_orthogonal_step():
    conv = nn.Conv2d(8, 16, 3, bias=False)
    grad = torch.randn_like(conv.weight)
    start = conv.weight.detach().clone() * 7.0  # any scale: the filters are renormalised first
    conv.weight.data.copy_(start)
    conv.weight.grad = grad.clone()
    opt = build_optimizer(OptimConfig(**MUON, muon_momentum=0.0), conv.parameters())
    opt.step()
    renormalised = start * (16**0.5 / start.norm())
    update = (renormalised - conv.weight.detach()) / 0.2
    singular = torch.linalg.svdvals(update.reshape(16, -1))
    # Three Newton-Schulz steps bring every singular value of the normalised gradient near 1 (not exactly).
    assert singular.min() > 0.3 and singular.max() < 1.6
    direction = torch.nn.functional.cosine_similarity(update.flatten(), grad.flatten(), dim=0)
    assert direction > 0.5


def test_sgd_groups_step_as_torch_sgd():
    model = _model()
    reference = _model()
    x = torch.randn(4, 2, 5, 5)
    for m in (model, reference):
        m(x).square().sum().backward()
    cfg = OptimConfig(**MUON, weight_decay=0.03)
    opt = build_optimizer(cfg, model.parameters())
    head = reference[3]
    torch_sgd = torch.optim.SGD(
        [{"params": [head.weight], "lr": 3.0, "weight_decay": 0.01}, {"params": [head.bias], "lr": 0.5,
                                                                         "weight_decay": 0.06}],
        momentum=0.85, nesterov=True,
    )  # fmt: skip
    for _ in range(2):
        opt.step()
        torch_sgd.step()
    torch.testing.assert_close(model[3].weight, head.weight)
    torch.testing.assert_close(model[3].bias, head.bias)


def test_muon_trains_and_resumes_exactly(tmp_path):
    optim = OptimConfig(**MUON, scheduler="linear")
    reference = helpers.train_run(None, optim=optim)
    assert reference.history.valid[-1]["accuracy"] > 0.9  # the toy task is easy; a broken step would not learn it
    with pytest.raises(helpers.Crash):
        helpers.train_run(tmp_path, optim=optim, callbacks=[helpers.CrashAt(8)])
    resumed = helpers.train_run(tmp_path, optim=optim, resume=True)
    for name, value in reference.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)


def test_linear_schedule_falls_to_zero_after_warmup():
    cfg = OptimConfig(name="sgd", lr=1.0, scheduler="linear", warmup_fraction=0.2)
    optimizer = build_optimizer(cfg, nn.Linear(2, 1).parameters())
    scheduler = build_scheduler(cfg, optimizer, 5, 2)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1 / 3, 2 / 3, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])


def test_step_takes_a_closure_as_lightning_calls_it():
    model = _model()
    opt = build_optimizer(OptimConfig(**MUON), model.parameters())
    x = torch.randn(4, 2, 5, 5)
    before = [p.detach().clone() for p in model.parameters()]

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss is not None and loss.requires_grad
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)]
    assert changed == [p.requires_grad for p in model.parameters()]


def test_an_all_zero_filter_bank_takes_a_finite_step():
    conv = nn.Conv2d(4, 4, 3, bias=False)
    nn.init.zeros_(conv.weight)
    conv.weight.grad = torch.randn_like(conv.weight)
    build_optimizer(OptimConfig(**MUON), conv.parameters()).step()
    assert torch.isfinite(conv.weight).all() and conv.weight.abs().sum() > 0
