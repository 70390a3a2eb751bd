"""A fast modern default after airbench94 (github.com/KellerJordan/cifar10-airbench).

Differences from airbench94's ``make_net``: the default stem is a padded 3x3 conv + batch norm; ``stem =
"whiten"`` is airbench's frozen 2x2 whitening conv (:mod:`convscope.models.whitening`, fitted to the training images
before training). The final pooling is a global max pool, so 28x28 greyscale and 32x32 colour (and other sizes)
both work.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from convscope.errors import UserError
from convscope.models.layers import ConvNet, Scale, check_widths
from convscope.models.whitening import PatchWhitening

STEMS = ("conv", "whiten")


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    # No conv bias: the batch norm's shift makes it redundant.
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU()]


def _block(cin: int, cout: int) -> nn.Sequential:
    """airbench's ConvGroup: conv, pool, BN, GELU, conv, BN, GELU (pooling before the first BN as there)."""
    conv1, bn1, act1 = _conv_bn(cin, cout)
    return nn.Sequential(conv1, nn.MaxPool2d(2), bn1, act1, *_conv_bn(cout, cout))


def fastnet(
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    *,
    widths: Sequence[int] = (64, 256, 256),
    scale: float = 1 / 9,
    stem: str = "conv",
) -> ConvNet:
    """A stem, three conv blocks that each halve the resolution, global max pool, linear.

    ``stem``: ``"conv"``, a 3x3 conv at widths[0] // 2 channels with batch norm; ``"whiten"``, airbench's frozen
    2x2 whitening conv (8 x in_channels outputs, one pixel smaller) and a GELU. ``scale`` multiplies the logits
    (airbench's 1/9), which keeps early softmax outputs soft.
    """
    widths = check_widths(widths, 3, "fastnet")
    if stem not in STEMS:
        raise UserError(f"model 'fastnet' option stem = {stem!r} is not one of: {', '.join(STEMS)}")
    smallest = 9 if stem == "whiten" else 8  # the whitening conv takes a pixel off; three poolings need 8 after it
    if min(image_size) < smallest:
        size = f"{smallest}x{smallest}"
        raise UserError(f"image_size = {tuple(image_size)} is too small for model 'fastnet': expected at least {size}")
    if stem == "whiten":
        whitening = PatchWhitening(in_channels)
        stem_layers, stem_width = [whitening, nn.GELU()], whitening.out_channels
    else:
        stem_width = max(1, widths[0] // 2)
        stem_layers = _conv_bn(in_channels, stem_width)
    features = nn.Sequential(
        *stem_layers,
        _block(stem_width, widths[0]),
        _block(widths[0], widths[1]),
        _block(widths[1], widths[2]),
    )
    head = nn.Sequential(
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(widths[2], num_classes, bias=False),
        Scale(scale),
    )
    return ConvNet(features, head)


def fastnet_small(
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    *,
    widths: Sequence[int] = (32, 64, 128),
    scale: float = 1 / 9,
    stem: str = "conv",
) -> ConvNet:
    """``fastnet`` with narrower blocks (32, 64, 128): roughly a tenth of the compute."""
    return fastnet(num_classes, in_channels, image_size, widths=widths, scale=scale, stem=stem)
