"""A fast modern default after airbench94 (github.com/KellerJordan/cifar10-airbench).

Differences from airbench94's ``make_net``: the default stem is a padded 3x3 conv + batch norm; ``stem =
"whiten"`` is airbench's frozen 2x2 whitening conv (:mod:`convscope.models.whitening`, fitted to the training images
before training). The final pooling is a global max pool, so 28x28 greyscale and 32x32 colour (and other sizes)
both work.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from torch import nn

from convscope.errors import UserError
from convscope.models.layers import ConvNet, Scale, check_widths
from convscope.models.whitening import PatchWhitening

STEMS = ("conv", "whiten")


def _conv_bn(cin: int, cout: int, bn_momentum: float) -> list[nn.Module]:
    # No conv bias: the batch norm's shift makes it redundant.
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, momentum=bn_momentum), nn.GELU()]


def _block(cin: int, cout: int, bn_momentum: float) -> nn.Sequential:
    """airbench's ConvGroup: conv, pool, BN, GELU, conv, BN, GELU (pooling before the first BN as there)."""
    conv1, bn1, act1 = _conv_bn(cin, cout, bn_momentum)
    return nn.Sequential(conv1, nn.MaxPool2d(2), bn1, act1, *_conv_bn(cout, cout, bn_momentum))


def _airbench_init(model: ConvNet, bn_scale: bool, dirac: bool, head_std: float) -> None:
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d) and not bn_scale:
            layer.weight.requires_grad_(False)  # stays 1: a scale the next conv's filters can take on
        if isinstance(layer, nn.Conv2d) and dirac:
            # The first in_channels filters start as the identity: each block starts close to passing its
            # input through, which trains faster in few epochs (airbench).
            weight = layer.weight.data
            nn.init.dirac_(weight[: weight.shape[1]])
        if isinstance(layer, nn.Linear) and head_std > 0:
            layer.weight.data.mul_(head_std / layer.weight.data.std())


def fastnet(
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    *,
    widths: Sequence[int] = (64, 256, 256),
    scale: float = 1 / 9,
    stem: str = "conv",
    bn_momentum: float = 0.1,
    bn_scale: bool = True,
    dirac: bool = False,
    head_std: float = 0.0,
) -> ConvNet:
    """A stem, three conv blocks that each halve the resolution, global max pool, linear.

    ``stem``: ``"conv"``, a 3x3 conv at widths[0] // 2 channels with batch norm; ``"whiten"``, airbench's frozen
    2x2 whitening conv (8 x in_channels outputs, one pixel smaller) and a GELU. ``scale`` multiplies the logits
    (airbench's 1/9), which keeps early softmax outputs soft.

    airbench94_muon's settings, for runs of a few hundred steps: ``bn_momentum = 0.4`` (PyTorch's convention: the
    running statistics keep up with weights that move fast), ``bn_scale = false`` (batch-norm scales frozen at 1),
    ``dirac = true`` (identity-initialised filters), ``head_std = 1`` with ``scale = 1/256`` (the classifier's
    weights at unit scale, its output scaled down).
    """
    widths = check_widths(widths, 3, "fastnet")
    if not 0 <= bn_momentum <= 1:
        raise UserError(f"model 'fastnet' option bn_momentum = {bn_momentum!r} must be in [0, 1]")
    if not head_std >= 0:
        raise UserError(f"model 'fastnet' option head_std = {head_std!r} must be >= 0 (0: PyTorch's initialisation)")
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
        stem_layers = _conv_bn(in_channels, stem_width, bn_momentum)
    features = nn.Sequential(
        *stem_layers,
        _block(stem_width, widths[0], bn_momentum),
        _block(widths[0], widths[1], bn_momentum),
        _block(widths[1], widths[2], bn_momentum),
    )
    head = nn.Sequential(
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(widths[2], num_classes, bias=False),
        Scale(scale),
    )
    model = ConvNet(features, head)
    _airbench_init(model, bn_scale, dirac, head_std)
    return model


# fastnet with narrower blocks (32, 64, 128): roughly a tenth of the compute; every other option is fastnet's.
fastnet_small = functools.partial(fastnet, widths=(32, 64, 128))
fastnet_small.__doc__ = "``fastnet`` with narrower blocks (32, 64, 128): roughly a tenth of the compute."
