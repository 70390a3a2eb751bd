"""Detectors on fastnet's body: seed 002's YOLO grid and an anchor-free per-location detector.

Both keep ``features`` exactly as in :func:`convscope.models.fastnet.fastnet` (same layers, same parameter
names), so that ``transfer.init`` from a fastnet classification run of the same widths loads the body: seed 002's
"one shot" argument (a network trained to classify carries localisation, regression layers attach to it). Both
return raw outputs; the ``detect`` task (:mod:`convscope.tasks.detect`) turns them into boxes and losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from convscope.errors import UserError
from convscope.models.fastnet import fastnet
from convscope.models.layers import ConvNet


def _body(in_channels: int, image_size: tuple[int, int], widths: Sequence[int], model: str) -> nn.Sequential:
    """fastnet's convolutional body (stride 8), built by fastnet itself so the parameter names match."""
    if min(image_size) < 16:
        raise UserError(f"image_size = {tuple(image_size)} is too small for model {model!r}: expected at least 16x16")
    return fastnet(1, in_channels, image_size, widths=widths).features


class YoloGrid(ConvNet):
    """Seed 002's YOLO: convolutional layers, then (by default) a few fully connected layers that output, for each
    of the S x S cells, B boxes (x, y relative to the cell, sqrt(w), sqrt(h) relative to the image, confidence) and C
    class scores. ``forward`` returns the raw N x S x S x (B * 5 + C) values; the task squashes them into [0, 1]
    with a sigmoid (every target of the seed's loss lies there), so the square roots are predicted directly, as
    darknet does, and no square root of a prediction is ever taken."""

    def __init__(self, features: nn.Module, head: nn.Module, grid: int, boxes: int, num_classes: int,
                 conv_head: bool) -> None:  # fmt: skip
        super().__init__(features, head)
        self.grid, self.boxes, self.num_classes = grid, boxes, num_classes
        self.conv_head = conv_head  # a conv head gives N x (B * 5 + C) x S x S

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        if self.conv_head:
            return out.permute(0, 2, 3, 1)
        return out.view(x.shape[0], self.grid, self.grid, self.boxes * 5 + self.num_classes)


YOLO_HEADS = ("fc", "conv")


def yolo_grid(
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    *,
    widths: Sequence[int] = (32, 64, 128),
    grid: int = 8,
    boxes: int = 2,
    head: str = "fc",
    hidden: int = 512,
    dropout: float = 0.0,
) -> YoloGrid:
    """fastnet's body (``widths`` as fastnet's) pooled to the S x S grid (``grid``; the identity at 64 x 64 and
    S = 8), then the S x S x (B * 5 + C) outputs (``boxes`` is B). ``head = "fc"`` is the seed's: flattened, a
    hidden fully connected layer of ``hidden`` units with leaky ReLU (the seed's activation), the output layer;
    ``"conv"`` shares one 3x3 conv and a 1x1 output conv across the cells (YOLOv2's step)."""
    for name, value in (("grid", grid), ("boxes", boxes), ("hidden", hidden)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"model 'yolo-grid' option {name} = {value!r}: expected a positive integer")
    if not 0 <= dropout < 1:
        raise UserError(f"model 'yolo-grid' option dropout = {dropout!r}: expected a number in [0, 1)")
    if head not in YOLO_HEADS:
        raise UserError(f"model 'yolo-grid' option head = {head!r} is not one of: {', '.join(YOLO_HEADS)}")
    features = _body(in_channels, image_size, widths, "yolo-grid")
    channels = list(widths)[-1]
    outputs = boxes * 5 + num_classes
    if head == "fc":
        layers = nn.Sequential(
            nn.AdaptiveAvgPool2d(grid),
            nn.Flatten(),
            nn.Linear(channels * grid * grid, hidden),
            nn.LeakyReLU(0.1),
            nn.Dropout(dropout),
            nn.Linear(hidden, grid * grid * outputs),
        )
    else:
        layers = nn.Sequential(
            nn.AdaptiveAvgPool2d(grid),
            nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.LeakyReLU(0.1),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, outputs, 1),
        )
    return YoloGrid(features, layers, grid, boxes, num_classes, conv_head=head == "conv")


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU())


class FastDet(ConvNet):
    """Anchor-free, one prediction per location of the stride-``stride`` feature map (FCOS / YOLOX / YOLOv8).

    ``forward`` returns N x h x w x (C + 4 K) raw values: C class logits (sigmoid: the IoU-aware score), then K
    boxes as raw left, top, right, bottom distances from the location's centre (``softplus(raw) * stride``
    pixels; the task decodes), K = 1 with ``class_agnostic`` (one box shared by the classes) or K = C. With a
    ``neck`` (stride 4) the head reads the last block's maps upsampled and added to the block before it.
    """

    def __init__(self, features: nn.Sequential, head: nn.Module, neck: nn.Module | None, stride: int,
                 num_classes: int, agnostic: bool) -> None:  # fmt: skip
        super().__init__(features, head)
        self.neck = neck
        self.stride, self.num_classes, self.class_agnostic = stride, num_classes, agnostic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.neck is None:
            maps = self.features(x)
        else:
            fine = self.features[:-1](x)
            maps = self.neck(fine, self.features[-1](fine))
        return self.head(maps).permute(0, 2, 3, 1)


class Neck(nn.Module):
    """FPN's top-down step once: the stride-8 maps upsampled onto the stride-4 ones (1x1 projections added),
    then a 3x3 conv: finer positions for the boxes, the deeper block's context for the classes."""

    def __init__(self, fine: int, coarse: int, width: int) -> None:
        super().__init__()
        self.lateral = nn.Sequential(nn.Conv2d(fine, width, 1, bias=False), nn.BatchNorm2d(width))
        self.top = nn.Sequential(nn.Conv2d(coarse, width, 1, bias=False), nn.BatchNorm2d(width))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.out = nn.Sequential(nn.GELU(), _conv(width, width))

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return self.out(self.lateral(fine) + self.up(self.top(coarse)))


class DecoupledHead(nn.Module):
    """YOLOX's decoupled head: separate conv towers for the class scores and the boxes."""

    def __init__(self, channels: int, width: int, depth: int, num_classes: int, box_outputs: int) -> None:
        super().__init__()
        self.cls_tower = nn.Sequential(*[_conv(channels if i == 0 else width, width) for i in range(depth)])
        self.box_tower = nn.Sequential(*[_conv(channels if i == 0 else width, width) for i in range(depth)])
        self.cls = nn.Conv2d(width, num_classes, 1)
        self.box = nn.Conv2d(width, box_outputs, 1)
        # Scores start at the prior 0.01 (RetinaNet): most locations are background, and a start at 0.5 makes
        # the first steps' loss all background.
        nn.init.constant_(self.cls.bias, -math.log(99))
        nn.init.zeros_(self.box.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.cls(self.cls_tower(x)), self.box(self.box_tower(x))], dim=1)


def fastdet(
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    *,
    widths: Sequence[int] = (32, 64, 128),
    head_width: int = 64,
    head_depth: int = 2,
    class_agnostic: bool = True,
    stride: int = 8,
) -> FastDet:
    """fastnet's body and a decoupled head of ``head_depth`` 3x3 convs of ``head_width`` channels per branch,
    on the body's stride-8 maps or (``stride = 4``) on a one-step FPN neck. ``class_agnostic``: one box per
    location shared by the classes (seed 002's claim), else one per class."""
    for name, value in (("head_width", head_width), ("head_depth", head_depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"model 'fastdet' option {name} = {value!r}: expected a positive integer")
    if not isinstance(class_agnostic, bool):
        raise UserError(f"model 'fastdet' option class_agnostic = {class_agnostic!r}: expected true or false")
    if stride not in (4, 8):
        raise UserError(f"model 'fastdet' option stride = {stride!r}: expected 4 or 8")
    features = _body(in_channels, image_size, widths, "fastdet")
    widths = list(widths)
    neck = Neck(widths[1], widths[2], head_width) if stride == 4 else None
    boxes = 4 if class_agnostic else 4 * num_classes
    head = DecoupledHead(head_width if neck else widths[2], head_width, head_depth, num_classes, boxes)
    return FastDet(features, head, neck, stride, num_classes, class_agnostic)
