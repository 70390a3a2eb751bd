import pytest
import torch
from torch import nn

from convscope.errors import UserError
from convscope.models import DETECTORS, create_model, list_models, model_options

SHAPES = [(1, (28, 28)), (3, (32, 32))]
# The networks over images; char-cnn (texts) has its own tests in test_charcnn.py, the split-brain networks
# (3-channel Lab images only; the pre-training one outputs colours) theirs in test_splitbrain.py, the detectors
# (boxes, not class scores) theirs in test_detect_models.py.
IMAGE_MODELS = [name for name in list_models()
                if name != "char-cnn" and not name.startswith("splitbrain") and name not in DETECTORS]  # fmt: skip


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize(("channels", "size"), SHAPES)
def test_forward_backward(name: str, channels: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, inputs={"in_channels": channels, "image_size": size})
    assert isinstance(model.features, nn.Module) and isinstance(model.head, nn.Module)
    x = torch.randn(2, channels, *size)
    out = model(x)
    assert out.shape == (2, 10)
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_forward_is_head_of_spatial_features(name: str) -> None:
    model = create_model(
        name, num_classes=10, inputs={"in_channels": 3, "image_size": (32, 32)}
    ).eval()  # eval: no dropout
    x = torch.randn(2, 3, 32, 32)
    features = model.features(x)
    assert features.ndim == 4
    torch.testing.assert_close(model(x), model.head(features))


def test_selu_lenet_has_the_seed_parameter_count() -> None:
    model = create_model("selu-lenet", num_classes=10, inputs={"in_channels": 1, "image_size": (28, 28)})
    assert sum(p.numel() for p in model.parameters()) == 233_578


def test_lenet5_flatten_size_follows_the_image_size() -> None:
    assert (
        create_model("lenet5", num_classes=10, inputs={"in_channels": 1, "image_size": (28, 28)}).head[1].in_features
        == 256
    )
    assert (
        create_model("lenet5", num_classes=10, inputs={"in_channels": 3, "image_size": (32, 32)}).head[1].in_features
        == 400
    )


def test_options() -> None:
    small = create_model(
        "fastnet", num_classes=5, inputs={"in_channels": 3, "image_size": (32, 32)}, widths=[32, 64, 128]
    )
    default_small = create_model("fastnet-small", num_classes=5, inputs={"in_channels": 3, "image_size": (32, 32)})
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in default_small.parameters())
    assert model_options("cifar-cnn") == {"widths": (32, 64, 128, 256), "hidden": 256}


def test_fastnet_airbench_options() -> None:
    inputs = {"in_channels": 3, "image_size": (32, 32)}
    model = create_model("fastnet-small", num_classes=5, inputs=inputs, bn_momentum=0.4, bn_scale=False, dirac=True,
                         head_std=1.0)  # fmt: skip
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.4 and not m.weight.requires_grad and m.bias.requires_grad for m in norms)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 32)
    x = torch.randn(1, 32, 6, 6)
    # The first in_channels filters pass their input through: identity initialisation.
    torch.testing.assert_close(torch.nn.functional.conv2d(x, conv.weight[:32], padding=1), x)
    head = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert float(head.weight.detach().std()) == pytest.approx(1.0)
    plain = create_model("fastnet-small", num_classes=5, inputs=inputs)
    plain_norms = [m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.weight.requires_grad and m.momentum == 0.1 for m in plain_norms)
    with pytest.raises(UserError, match="bn_momentum = 2"):
        create_model("fastnet", num_classes=5, inputs=inputs, bn_momentum=2)


def test_unknown_model_and_option_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown model 'nope'"):
        create_model("nope", num_classes=10, inputs={"in_channels": 1, "image_size": (28, 28)})
    accepted = "bn_momentum, bn_scale, dirac, head_std, scale, stem, widths"
    with pytest.raises(UserError, match=f"no option 'depth'; accepted: {accepted}"):
        create_model("fastnet", num_classes=10, inputs={"in_channels": 1, "image_size": (28, 28)}, depth=3)
    with pytest.raises(UserError, match="widths"):
        create_model("fastnet", num_classes=10, inputs={"in_channels": 1, "image_size": (28, 28)}, widths=(8, 8))
    with pytest.raises(UserError, match="too small"):
        create_model("lenet5", num_classes=10, inputs={"in_channels": 1, "image_size": (8, 8)})
