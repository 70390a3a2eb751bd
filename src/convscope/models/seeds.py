"""The networks of the seed notebooks, rebuilt with a flatten size computed for any image size."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from convscope.errors import UserError
from convscope.models.layers import ConvNet, check_widths, feature_shape


def selu_lenet(num_classes: int, in_channels: int, image_size: tuple[int, int]) -> ConvNet:
    """Seed 004: a LeNet with SELU activations and dropout (233,578 parameters at 1x28x28, 10 classes)."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1),
        nn.SELU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 5),
        nn.SELU(),
        nn.MaxPool2d(2),
    )
    flat = feature_shape(features, in_channels, image_size, "selu-lenet").numel()
    head = nn.Sequential(
        nn.Flatten(),
        nn.Linear(flat, 256),
        nn.SELU(),
        nn.Dropout(0.5),
        nn.Linear(256, num_classes),
    )
    return ConvNet(features, head)


def lenet5(num_classes: int, in_channels: int, image_size: tuple[int, int]) -> ConvNet:
    """Seed 002: LeNet-5 with ReLU and max pooling (16*4*4 = 256 features at 28x28)."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    flat = feature_shape(features, in_channels, image_size, "lenet5").numel()
    head = nn.Sequential(
        nn.Flatten(),
        nn.Linear(flat, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )
    return ConvNet(features, head)


def cifar_cnn(
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    *,
    widths: Sequence[int] = (32, 64, 128, 256),
    hidden: int = 256,
) -> ConvNet:
    """Seed 003: four 3x3 convolutions, max pooling after the 2nd, 3rd and 4th, then a two-layer classifier.

    The seed ended in LogSoftmax + NLLLoss; returning logits to a cross-entropy loss is the same loss.
    """
    widths = check_widths(widths, 4, "cifar-cnn")
    if not (isinstance(hidden, int) and hidden > 0):
        raise UserError(f"model 'cifar-cnn' option hidden = {hidden!r}: expected a positive integer")
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip((in_channels, *widths[:-1]), widths, strict=True)):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
        if i > 0:
            layers.append(nn.MaxPool2d(2))
    features = nn.Sequential(*layers)
    flat = feature_shape(features, in_channels, image_size, "cifar-cnn").numel()
    head = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    return ConvNet(features, head)
