"""The learning-rate range test on the engine's tiny task: the lr sweep, divergence, the suggestion, and a model
left exactly as it was given."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from convscope.data.sources.idx import read_idx_dir
from convscope.engine import OptimConfig, TrainConfig, Trainer
from convscope.engine import lr_find as lr_find_module
from convscope.engine.lr_find import LRFindSettings, find_lr, suggest
from convscope.errors import UserError
from tests.engine.helpers import ToyLoader, ToyTask, loaders, one_thread, tiny_model, toy_data

CPU = TrainConfig(device="cpu", quiet=True, epochs=1)
SGD = OptimConfig(name="sgd", lr=0.05, momentum=0.9)


def noisy_loader() -> ToyLoader:
    """The toy problem with every fourth label wrong: the loss has a floor, so a large enough lr blows it up
    (on the clean problem any lr drives it to 0)."""
    x, y = toy_data()
    y = y.clone()
    y[::4] = (y[::4] + 1) % 3
    return ToyLoader(x, y, batch_size=16)


def run(settings: LRFindSettings, model: nn.Module | None = None, optim: OptimConfig = SGD, **kwargs):
    torch.manual_seed(0)  # dropout
    with one_thread():
        return find_lr(model or tiny_model(), ToyTask(), optim, CPU, noisy_loader(), settings=settings, **kwargs)


def test_lrs_grow_geometrically_from_start_to_end_and_the_loss_is_smoothed_as_fastai():
    result = run(LRFindSettings(start_lr=1e-6, end_lr=1e-2, steps=20))  # too low to diverge
    assert result.stop_reason is None and len(result.lrs) == 20  # 20 steps cycle the 6 batches of an epoch
    assert result.lrs[0] == pytest.approx(1e-6) and result.lrs[-1] == pytest.approx(1e-2)
    ratios = np.array(result.lrs[1:]) / np.array(result.lrs[:-1])
    assert ratios == pytest.approx(np.full(19, 10 ** (4 / 19)))
    assert result.smoothed[0] == pytest.approx(result.losses[0])  # bias-corrected: no pull towards 0
    avg = 0.0
    for i, loss in enumerate(result.losses):
        avg = 0.98 * avg + 0.02 * loss
        assert result.smoothed[i] == pytest.approx(avg / (1 - 0.98 ** (i + 1)))


def test_stops_early_when_the_loss_diverges():
    result = run(LRFindSettings(start_lr=1e-4, end_lr=1e8, steps=100))
    assert len(result.lrs) < 100 and result.stop_reason is not None
    assert "diverging" in result.stop_reason or "loss became" in result.stop_reason
    if "diverging" in result.stop_reason:  # the last step recorded is the one past 4x the best
        assert result.smoothed[-1] > 4 * min(result.smoothed)
    assert all(math.isfinite(v) for v in result.losses)


def test_the_suggestion_lies_between_the_start_and_the_minimum():
    result = run(LRFindSettings(start_lr=1e-5, end_lr=10, steps=60))
    assert result.suggestion is not None
    assert result.suggestion_index < result.minimum
    assert result.lrs[0] <= result.suggestion < result.lrs[result.minimum]
    # The steepest point: no step before the minimum falls faster per decade of lr.
    slopes = np.gradient(result.smoothed, np.log10(result.lrs))
    assert slopes[result.suggestion_index] == min(slopes[10 : result.minimum])


def test_the_model_comes_back_unchanged():
    model = tiny_model()
    model[1].eval()  # a module in eval mode stays so
    model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run(LRFindSettings(start_lr=1e-3, end_lr=10, steps=30), model=model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key  # weights and batch-norm statistics alike
    assert not model[1].training and model[2].training and model.training
    assert not model[0].weight.requires_grad and model[6].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_in_eval_modules_keep_their_statistics_during_the_test():
    """A frozen backbone's batch norms stay in eval mode, as in a transfer recipe's phase 1."""
    model = tiny_model()
    seen = []
    model[1].register_forward_hook(lambda module, args, out: seen.append(module.training))
    run(LRFindSettings(start_lr=1e-4, end_lr=1e-2, steps=5), model=model, in_eval=[model[1]])
    assert seen == [False] * 5


def test_muon_lrs_are_scaled_together(monkeypatch: pytest.MonkeyPatch):
    """Muon's three lrs (filters, 2-D weights, biases) keep their ratios to optim.lr at every step."""
    built = []
    real = lr_find_module.build_optimizer

    def capture(cfg: OptimConfig, params):
        built.append(real(cfg, params))
        return built[-1]

    monkeypatch.setattr(lr_find_module, "build_optimizer", capture)
    muon = OptimConfig(name="muon", lr=0.2, linear_lr=2.0, bias_lr=0.05, momentum=0.8, nesterov=True)
    result = run(LRFindSettings(start_lr=1e-4, end_lr=1e-2, steps=5), optim=muon)
    last = result.lrs[-1]
    assert sorted(group["lr"] for group in built[0].param_groups) == pytest.approx(
        sorted([last, last * 2.0 / 0.2, last * 0.05 / 0.2])
    )


def test_suggest_picks_the_steepest_descent_before_the_minimum():
    lrs = list(np.logspace(-6, 1, 50))
    # Falls gently, steeply around step 30 (a tanh), bottoms at step 40, then climbs faster than it ever fell.
    steps = np.arange(50)
    smoothed = 2 - np.tanh((steps - 30) / 3) - 0.01 * steps
    smoothed[41:] = smoothed[40] + 0.5 * (steps[41:] - 40)
    assert suggest(lrs, list(smoothed)) == 30
    assert suggest(lrs, [1.0, 1.1, 1.5, 3.0]) is None  # never fell: nothing to suggest
    assert suggest(lrs[:4], [1.0, 0.5, 0.6, 5.0]) == 0  # too few steps to skip the first ten


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="--start-lr"):
        LRFindSettings(start_lr=1.0, end_lr=0.1)
    with pytest.raises(UserError, match="--steps"):
        LRFindSettings(steps=1)


def test_training_at_the_suggested_lr_learns():
    """The point of the test: three epochs at the suggested lr learn the toy problem."""
    result = run(LRFindSettings(start_lr=1e-5, end_lr=100, steps=100))
    assert result.suggestion is not None and result.stop_reason is not None

    def trained(lr: float) -> dict[str, float]:
        _, valid_loader = loaders()  # clean labels
        train = TrainConfig(device="cpu", quiet=True, epochs=3)
        trainer = Trainer(tiny_model(), ToyTask(), OptimConfig(name="sgd", lr=lr, momentum=0.9), train)
        with one_thread():
            trainer.fit(noisy_loader())
        return trainer.evaluate(valid_loader)

    learnt, barely = trained(result.suggestion), trained(result.lrs[0])
    assert learnt["accuracy"] > 0.9 and barely["accuracy"] < 0.6  # chance is 1/3
    assert learnt["loss"] < 0.8 * barely["loss"]


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not FASHION.exists(), reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)"
)
def test_training_at_the_suggested_lr_learns_real_fashion_mnist():
    """A small real problem: 3,000 Fashion-MNIST images, a one-hidden-layer network, two epochs at the suggestion."""
    splits, _ = read_idx_dir(FASHION, fashion=True)

    def tensors(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = splits[split].images[:n], splits[split].labels[:n]
        return (images.float() / 255 - 0.29) / 0.35, labels

    (x, y), (test_x, test_y) = tensors("train", 3000), tensors("test", 1000)

    def mlp() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))

    torch.manual_seed(0)
    with one_thread():
        result = find_lr(mlp(), ToyTask(), SGD, CPU, ToyLoader(x, y, batch_size=64), settings=LRFindSettings(1e-5, 10))
    assert result.suggestion is not None

    def test_accuracy(lr: float) -> float:
        model = mlp()
        train = TrainConfig(device="cpu", quiet=True, epochs=2)
        trainer = Trainer(model, ToyTask(), OptimConfig(name="sgd", lr=lr, momentum=0.9), train)
        with one_thread():
            trainer.fit(ToyLoader(x, y, batch_size=64))
            with torch.no_grad():
                return (model.eval()(test_x).argmax(1) == test_y).float().mean().item()

    learnt = test_accuracy(result.suggestion)
    assert learnt > 0.75  # chance is 0.10
    assert learnt > test_accuracy(result.lrs[0]) + 0.3
