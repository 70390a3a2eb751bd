"""Seed 000's fully convolutional ResNet-18: a map of class scores at the input's resolution.

From torchvision's ResNet-18: the first conv becomes 3x3 stride 1, the max-pool becomes a 2x bilinear
upsampling (the first block runs at twice the input resolution, so the body downsamples only 4x in all),
the average pool and linear layer become a 1x1 "pixelwise linear" convolution, and the class maps are
upsampled to the image size. The seed then aggregated the maps with a smooth maximum; here the head does
the same so that ``model(x)`` gives class logits like every convscope model, and :meth:`FCNResNet.class_maps`
gives the N x classes x H x W maps before the aggregation. With ``pooling = "none"`` ``model(x)`` returns the
maps themselves, which is what the ``weakseg`` and ``segment`` tasks train (they aggregate, or not, themselves).

``fcn-small`` is a compact fully convolutional body of the same shape for 64 x 64 scenes on a CPU: a few
conv-BN-ReLU stages, output stride 4 or 8, the same pixelwise head.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from convscope.errors import UserError
from convscope.models.layers import ConvNet, check_widths

POOLINGS = ("smoothmax", "avg", "max", "none")


def smooth_max(x: torch.Tensor, r: float = 0.5) -> torch.Tensor:
    """Seed 000's spatial aggregation ``(1/r) * log(mean(exp(r * x)))`` over the last two dimensions: between the
    mean (r -> 0) and the max (r -> inf), so one confident region decides a class without the rest of the image
    being ignored. Computed with logsumexp, which cannot overflow."""
    if not r > 0:
        raise UserError(f"smooth-max r = {r!r}: expected a number > 0")
    flat = x.flatten(2)
    return (torch.logsumexp(r * flat, dim=2) - math.log(flat.shape[2])) / r


class SmoothMax(nn.Module):
    """:func:`smooth_max` as a layer, r = 0.5 as in seed 000."""

    def __init__(self, r: float = 0.5) -> None:
        super().__init__()
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return smooth_max(x, self.r)


class PixelwiseHead(nn.Module):
    """A 1x1 conv (a linear layer applied at every position), bilinear upsampling to ``image_size``, then a
    spatial aggregation to one logit per class (``pooling = "none"``: the maps themselves)."""

    def __init__(self, channels: int, num_classes: int, image_size: tuple[int, int], pooling: str) -> None:
        super().__init__()
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.kaiming_normal_(self.classifier.weight)  # as the seed
        self.image_size = tuple(image_size)
        pools = {"smoothmax": SmoothMax(), "avg": nn.AdaptiveAvgPool2d(1), "max": nn.AdaptiveMaxPool2d(1)}
        self.pool = pools.get(pooling)  # None: return the maps

    def maps(self, features: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """N x classes x H x W scores, upsampled to ``size`` (default: the training image size)."""
        scores = self.classifier(features)
        return F.interpolate(scores, size=size or self.image_size, mode="bilinear", align_corners=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.maps(features)
        return maps if self.pool is None else self.pool(maps).flatten(1)


class FCNResNet(ConvNet):
    head: PixelwiseHead

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """N x classes x H x W logits at the resolution of ``x`` (any size, not only the training size)."""
        return self.head.maps(self.features(x), size=tuple(x.shape[-2:]))


def _check_pooling(pooling: str, model: str) -> None:
    if pooling not in POOLINGS:
        raise UserError(f"model {model!r} option pooling = {pooling!r}: expected one of: {', '.join(POOLINGS)}")


def fcn_resnet18(
    num_classes: int, in_channels: int, image_size: tuple[int, int], *, pooling: str = "smoothmax"
) -> FCNResNet:
    """Seed 000's ``tiny_resnet`` (11.2M parameters at 10 classes); ``pooling`` (smoothmax, avg, max) turns
    its class maps into the logits that classification trains on; ``none`` returns the maps (task ``weakseg``)."""
    _check_pooling(pooling, "fcn-resnet18")
    if min(image_size) < 8:
        raise UserError(f"image_size = {tuple(image_size)} is too small for model 'fcn-resnet18': expected 8x8 or more")
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)  # the seed's, with a bias
    net.maxpool = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    body = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    features = nn.Sequential(OrderedDict((key, getattr(net, key)) for key in body))
    return FCNResNet(features, PixelwiseHead(net.fc.in_features, num_classes, image_size, pooling))


def _conv_bn_relu(cin: int, cout: int, *, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    # No conv bias: the batch norm's shift makes it redundant.
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def fcn_small(
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    *,
    widths: Sequence[int] = (32, 64, 96, 128),
    output_stride: int = 4,
    pooling: str = "smoothmax",
) -> FCNResNet:
    """One conv-BN-ReLU per width. The first log2(``output_stride``) convs halve the resolution; the rest keep it
    and double their dilation each time, so the receptive field still grows (a 28 x 28 item fits in it at the
    defaults: 55 pixels) without the maps getting coarser. Then seed 000's pixelwise head (1x1 conv, bilinear
    upsampling to the image); ``pooling`` as ``fcn-resnet18``'s, ``"none"`` for the weakseg and segment tasks."""
    _check_pooling(pooling, "fcn-small")
    widths = tuple(widths)
    if output_stride not in (1, 2, 4, 8, 16) or not widths:
        raise UserError(f"model 'fcn-small' options output_stride = {output_stride}, widths = {list(widths)}: "
                        "expected a stride of 1, 2, 4, 8 or 16 and at least one width")  # fmt: skip
    check_widths(widths, len(widths), "fcn-small")
    strided = int(math.log2(output_stride))
    if len(widths) < strided or min(image_size) < output_stride:
        raise UserError(f"model 'fcn-small': output_stride = {output_stride} needs at least {strided} widths and "
                        f"images of {output_stride}x{output_stride} or more")  # fmt: skip
    layers: list[nn.Module] = []
    cin, dilation = in_channels, 1
    for index, width in enumerate(widths):
        if index >= strided:
            dilation *= 2
        layers += _conv_bn_relu(
            cin, width, stride=2 if index < strided else 1, dilation=1 if index < strided else dilation
        )
        cin = width
    return FCNResNet(nn.Sequential(*layers), PixelwiseHead(cin, num_classes, image_size, pooling))
