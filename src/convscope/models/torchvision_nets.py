"""torchvision's AlexNet and ResNets as convscope ``ConvNet``s, with a stem for small images.

The layers keep torchvision's names under ``features.`` (the body) and ``head.`` (the classifier), so a
torchvision state dict loads by name (see :mod:`convscope.models.weights`).

Stems (``stem`` option):

- ``imagenet``: torchvision's own (ResNet: 7x7 stride-2 conv + 3x3 stride-2 max-pool, a quarter of the
  resolution before the first block; AlexNet: 11x11 stride-4 conv). Cheapest; on 32x32 images ResNet's
  last block sees 1x1 maps, AlexNet fails below 63 px.
- ``small``: a 3x3 stride-1 first conv and no max-pool (the usual CIFAR ResNet, seed 000's stem): full
  resolution in the first block, the most accurate on small images and about 16x the compute of
  ``imagenet`` at the same size (ResNet-18 at 32x32: ~0.56 GMACs per image instead of ~0.04).
  AlexNet keeps its max-pools.
- ``small-pool``: the 3x3 stride-1 conv, then the max-pool (half resolution): about 4x ``imagenet``'s
  compute, a middle ground for CPUs.
- ``auto``: ``imagenet`` for images of at least 64 px a side, ``small`` below. AlexNet's default, since
  its ImageNet stem cannot run on small images; the ResNets default to ``imagenet`` (torchvision's model
  exactly, and affordable on a CPU), so choose ``small`` for accuracy on 32x32 images when compute allows.

The stem's first conv takes ``in_channels`` (1 for greyscale); its weights then no longer fit a 3-channel file.
"""

from __future__ import annotations

from collections import OrderedDict

import torchvision
from torch import nn

from convscope.errors import UserError
from convscope.models.heads import make_head
from convscope.models.layers import ConvNet

STEMS = ("auto", "imagenet", "small", "small-pool")
_SMALL_IMAGE = 64  # below this side, ``auto`` picks the small stem


def _resolve_stem(stem: str, image_size: tuple[int, int], model: str) -> str:
    if stem not in STEMS:
        raise UserError(f"model {model!r} option stem = {stem!r}: expected one of: {', '.join(STEMS)}")
    if stem == "auto":
        return "imagenet" if min(image_size) >= _SMALL_IMAGE else "small"
    return stem


def _resnet(
    depth: int,
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    stem: str,
    head: str,
    hidden: int,
    dropout: float,
) -> ConvNet:
    name = f"resnet{depth}"
    net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    stem = _resolve_stem(stem, image_size, name)
    if stem == "imagenet":
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        if stem == "small":
            net.maxpool = nn.Identity()
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision initialises it
    body = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    features = nn.Sequential(OrderedDict((key, getattr(net, key)) for key in body))
    channels = net.fc.in_features
    if head == "linear":  # keep torchvision's initialised fc, so the same seed gives torchvision's model
        classifier = nn.Sequential(OrderedDict(avgpool=net.avgpool, flatten=nn.Flatten(), fc=net.fc))
    else:
        classifier = make_head(head, channels, num_classes, hidden=hidden, dropout=dropout, model=name)
    return ConvNet(features, classifier)


def resnet18(num_classes: int, in_channels: int, image_size: tuple[int, int], *, stem: str = "imagenet",
             head: str = "linear", hidden: int = 256, dropout: float = 0.5) -> ConvNet:  # fmt: skip
    """torchvision's ResNet-18 (11.7M parameters at 1000 classes). ``head = "transfer"`` puts seed 004's head
    (``hidden`` units, ``dropout``) in place of the linear one."""
    return _resnet(18, num_classes, in_channels, image_size, stem, head, hidden, dropout)


def resnet34(num_classes: int, in_channels: int, image_size: tuple[int, int], *, stem: str = "imagenet",
             head: str = "linear", hidden: int = 256, dropout: float = 0.5) -> ConvNet:  # fmt: skip
    """torchvision's ResNet-34 (basic blocks 3-4-6-3)."""
    return _resnet(34, num_classes, in_channels, image_size, stem, head, hidden, dropout)


def resnet50(num_classes: int, in_channels: int, image_size: tuple[int, int], *, stem: str = "imagenet",
             head: str = "linear", hidden: int = 256, dropout: float = 0.5) -> ConvNet:  # fmt: skip
    """torchvision's ResNet-50 (bottleneck blocks 3-4-6-3, 2048 features)."""
    return _resnet(50, num_classes, in_channels, image_size, stem, head, hidden, dropout)


def alexnet(
    num_classes: int, in_channels: int, image_size: tuple[int, int], *, stem: str = "auto", dropout: float = 0.5
) -> ConvNet:
    """torchvision's AlexNet (seed 002): five convs with three max-pools, adaptive average pooling to 6x6,
    and the three-layer classifier with dropout. The ``small`` stems use a 3x3 stride-1 first conv
    (``small-pool`` is the same here: AlexNet keeps its max-pools either way)."""
    net = torchvision.models.alexnet(weights=None, num_classes=num_classes, dropout=dropout)
    if _resolve_stem(stem, image_size, "alexnet") != "imagenet":
        net.features[0] = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)
    elif in_channels != 3:
        net.features[0] = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
    side = min(image_size)
    # Each max-pool (3, stride 2) needs maps of at least 3x3; the 11x11 stride-4 stem needs 63 px for that.
    smallest = 63 if isinstance(net.features[0], nn.Conv2d) and net.features[0].stride == (4, 4) else 15
    if side < smallest:
        raise UserError(f"image_size = {tuple(image_size)} is too small for model 'alexnet' with this stem: "
                        f"expected at least {smallest}x{smallest}")  # fmt: skip
    head = nn.Sequential(OrderedDict(avgpool=net.avgpool, flatten=nn.Flatten(), classifier=net.classifier))
    return ConvNet(net.features, head)
