"""Seed 000's fully convolutional ResNet-18: a map of class scores at the input's resolution.

From torchvision's ResNet-18: the first conv becomes 3x3 stride 1, the max-pool becomes a 2x bilinear
upsampling (the first block runs at twice the input resolution, so the body downsamples only 4x in all),
the average pool and linear layer become a 1x1 "pixelwise linear" convolution, and the class maps are
upsampled to the image size. The seed then aggregated the maps with a smooth maximum; here the head does
the same so that ``model(x)`` gives class logits like every convscope model, and :meth:`FCNResNet.class_maps`
gives the N x classes x H x W maps before the aggregation.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from convscope.errors import UserError
from convscope.models.layers import ConvNet

POOLINGS = ("smoothmax", "avg", "max")


class SmoothMax(nn.Module):
    """Seed 000's spatial aggregation ``2 * log(mean(exp(0.5 * x)))`` over H x W: between the mean and the max,
    so one confident region decides a class without the rest of the image being ignored. Computed with
    logsumexp, which cannot overflow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        return 2 * (torch.logsumexp(0.5 * flat, dim=2) - math.log(flat.shape[2]))


class PixelwiseHead(nn.Module):
    """A 1x1 conv (a linear layer applied at every position), bilinear upsampling to ``image_size``, then a
    spatial aggregation to one logit per class."""

    def __init__(self, channels: int, num_classes: int, image_size: tuple[int, int], pooling: str) -> None:
        super().__init__()
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.kaiming_normal_(self.classifier.weight)  # as the seed
        self.image_size = tuple(image_size)
        pools = {"smoothmax": SmoothMax(), "avg": nn.AdaptiveAvgPool2d(1), "max": nn.AdaptiveMaxPool2d(1)}
        self.pool = pools[pooling]

    def maps(self, features: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """N x classes x H x W scores, upsampled to ``size`` (default: the training image size)."""
        scores = self.classifier(features)
        return F.interpolate(scores, size=size or self.image_size, mode="bilinear", align_corners=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.pool(self.maps(features)).flatten(1)


class FCNResNet(ConvNet):
    head: PixelwiseHead

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """N x classes x H x W logits at the resolution of ``x`` (any size, not only the training size)."""
        return self.head.maps(self.features(x), size=tuple(x.shape[-2:]))


def fcn_resnet18(
    num_classes: int, in_channels: int, image_size: tuple[int, int], *, pooling: str = "smoothmax"
) -> FCNResNet:
    """Seed 000's ``tiny_resnet`` (11.2M parameters at 10 classes); ``pooling`` (smoothmax, avg, max) turns
    its class maps into the logits that classification trains on."""
    if pooling not in POOLINGS:
        raise UserError(f"model 'fcn-resnet18' option pooling = {pooling!r}: expected one of: {', '.join(POOLINGS)}")
    if min(image_size) < 8:
        raise UserError(f"image_size = {tuple(image_size)} is too small for model 'fcn-resnet18': expected 8x8 or more")
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)  # the seed's, with a bias
    net.maxpool = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    body = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    features = nn.Sequential(OrderedDict((key, getattr(net, key)) for key in body))
    return FCNResNet(features, PixelwiseHead(net.fc.in_features, num_classes, image_size, pooling))
