"""Tiny networks for explanation tests (captum's ``basic_models`` idea): the ConvNet shape every convscope
model has, small enough that a test runs in milliseconds."""

from __future__ import annotations

import torch
from torch import nn

from convscope.models.layers import ConvNet


def tiny_convnet(act: type[nn.Module] = nn.ReLU, channels: int = 1, classes: int = 3, inplace: bool = False) -> ConvNet:
    """conv, act, pool, conv, batch norm, act; global average pool and a linear head."""
    torch.manual_seed(0)

    def activation() -> nn.Module:
        return act(inplace=True) if inplace else act()

    features = nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        activation(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        activation(),
    )
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, classes))
    model = ConvNet(features, head)
    # Non-trivial batch-norm statistics, so evaluation mode matters.
    model.features[4].running_mean.uniform_(-0.5, 0.5)
    model.features[4].running_var.uniform_(0.5, 2.0)
    return model.eval()


class ClassMaps(nn.Module):
    """A weakly supervised model's shape: N x C x h x w class maps (a 1x1 convolution over a strided conv)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.classifier = nn.Conv2d(4, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.body(x)))


def images(n: int = 3, channels: int = 1, size: int = 8) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(1))
