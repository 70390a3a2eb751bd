"""Seed 002's ResBlock and "Monster": residual blocks on top of a feature stem borrowed from another network.

The seed took AlexNet's pretrained first convolution (11x11, stride 4) as a stem and froze it for the first
half of the epochs. Here the stem is that layer, named ``features.0`` as in AlexNet, so ``transfer.init``
pointing at an AlexNet run or a torchvision AlexNet state dict fills it; :meth:`Monster.backbone` makes
the transfer phases freeze only the stem, while the new 1x1 conv and the blocks train from the start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convscope.errors import UserError
from convscope.models.layers import ConvNet


class ResBlock(nn.Module):
    """conv, BN, ReLU, conv, BN, add the input, ReLU (seed 002; same channels and size in and out)."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + x)  # not in place: autograd needs y's value for bn2's backward


class Monster(ConvNet):
    def backbone(self) -> nn.Module:
        """Only the borrowed stem is frozen in the first transfer phase (seed 002)."""
        return self.features[:2]


def monster(
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    *,
    blocks: int = 8,
    channels: int = 64,
    kernel_size: int = 3,
) -> Monster:
    """AlexNet's first conv + ReLU, a 1x1 conv to ``channels`` + ReLU, ``blocks`` ResBlocks, average pooling
    over the whole map, ReLU, a linear layer (seed 002: 8 blocks of 64 channels)."""
    for option, value in (("blocks", blocks), ("channels", channels), ("kernel_size", kernel_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"model 'monster' option {option} = {value!r}: expected a positive integer")
    if kernel_size % 2 == 0:
        raise UserError(f"model 'monster' option kernel_size = {kernel_size}: expected an odd size (same-size maps)")
    if min(image_size) < 7:
        raise UserError(f"image_size = {tuple(image_size)} is too small for model 'monster': expected 7x7 or more")
    features = nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2),  # AlexNet's features[0]
        nn.ReLU(),
        nn.Conv2d(64, channels, kernel_size=1),
        nn.ReLU(),
        nn.Sequential(*(ResBlock(channels, kernel_size) for _ in range(blocks))),
    )
    # The seed's AvgPool2d over the stem's map size, written adaptively so any image size works.
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.ReLU(), nn.Flatten(), nn.Linear(channels, num_classes))
    return Monster(features, head)
