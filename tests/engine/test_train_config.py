import dataclasses

import pytest
import torch

from convscope.engine import OptimConfig, TrainConfig, resolve_device
from convscope.errors import UserError


@pytest.mark.parametrize(
    ("make", "field", "allowed"),
    [
        (lambda: OptimConfig(name="rmsprop"), "optim.name", "sgd, adam, adamw, muon"),
        (lambda: OptimConfig(name="muon", lr=0.2, bias_lr=1.0), "optim.linear_lr", "needs it > 0"),
        (lambda: OptimConfig(scheduler="poly"), "optim.scheduler", "none, onecycle, cosine, step, linear"),
        (lambda: TrainConfig(precision="fp16"), "train.precision", "fp32, bf16"),
        (lambda: TrainConfig(device="tpu"), "train.device", "auto, cpu, cuda, mps"),
        (lambda: TrainConfig(early_stopping="always"), "train.early_stopping", "none, first-drop, patience"),
        (lambda: TrainConfig(monitor_mode="up"), "train.monitor_mode", "max, min"),
    ],
)
def test_unknown_choice_names_field_and_allowed_values(make, field, allowed):
    with pytest.raises(UserError, match=field) as e:
        make()
    assert allowed in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda: OptimConfig(lr=0),
        lambda: OptimConfig(momentum=1.0),
        lambda: OptimConfig(nesterov=True, name="adamw"),
        lambda: OptimConfig(warmup_fraction=1.0),
        lambda: TrainConfig(epochs=0),
        lambda: TrainConfig(grad_clip=-1.0),
        lambda: TrainConfig(log_every=0),
    ],
)
def test_out_of_range_values(make):
    with pytest.raises(UserError):
        make()


def test_fields_set_later_are_checked_by_validate():
    cfg = TrainConfig()
    cfg.precision = "int8"  # what a loader setting fields one by one would do
    with pytest.raises(UserError, match=r"train.precision"):
        cfg.validate()


def test_only_simple_field_types():
    for cls in (OptimConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            assert f.type in ("str", "int", "float", "bool", "list[float]", "list[str]"), (cls.__name__, f.name)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"train.device = 'cuda' is not available.*usable: auto, cpu"):
            resolve_device("cuda")
