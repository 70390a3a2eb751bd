"""Classifier heads that sit on a convolutional body's N x C x h x w maps."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from convscope.errors import UserError


def linear_head(channels: int, num_classes: int) -> nn.Sequential:
    """Global average pooling, then one linear layer (torchvision's ResNet head, named as there: ``fc``)."""
    return nn.Sequential(
        OrderedDict(avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(channels, num_classes))
    )


def transfer_head(channels: int, num_classes: int, *, hidden: int = 256, dropout: float = 0.5) -> nn.Sequential:
    """Seed 004's head for a pretrained body: adaptive average pooling, BatchNorm1d, Dropout, Linear, ReLU,
    BatchNorm1d, Dropout, Linear. The batch norms keep the new dense layers stable on features of another scale."""
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise UserError(f"head option hidden = {hidden!r}: expected a positive integer")
    if not 0 <= dropout < 1:
        raise UserError(f"head option dropout = {dropout!r}: expected a number in [0, 1)")
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.BatchNorm1d(channels),
        nn.Dropout(dropout),
        nn.Linear(channels, hidden),
        nn.ReLU(),
        nn.BatchNorm1d(hidden),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


HEADS = ("linear", "transfer")


def make_head(kind: str, channels: int, num_classes: int, *, hidden: int, dropout: float, model: str) -> nn.Sequential:
    """``kind`` is a model's ``head`` option: ``linear`` or ``transfer``."""
    if kind == "linear":
        return linear_head(channels, num_classes)
    if kind == "transfer":
        return transfer_head(channels, num_classes, hidden=hidden, dropout=dropout)
    raise UserError(f"model {model!r} option head = {kind!r}: expected one of: {', '.join(HEADS)}")
