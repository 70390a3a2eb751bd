"""Seed 001's split-brain autoencoder: two fully convolutional halves on Lab images, L -> ab classes and
ab -> L classes per cell of a coarse grid, and SBNetClassifier, a classifier on their concatenated outputs.

Inputs are scaled Lab batches (:func:`convscope.data.lab.scale_lab`): channel 0 is L, channels 1-2 are a, b.

Encoders (``encoder`` option), each one half; the grid is the image divided by 8 from 64 px up (the seed's
96 -> 12), by 4 below (CIFAR-10's 32 -> 8):

- ``simple``: the seed's SimpleAE: two 4x4 stride-2 convolutions, then three 5x5 convolutions, the last one
  giving the classes. At 96 px they are unpadded as in the seed (24 -> 20 -> 16 -> 12); on small images they
  keep the size (padding 2), since three unpadded 5x5 convolutions would leave nothing of an 8x8 map.
- ``alexnet``: half an AlexNet as in Zhang et al.'s split-brain paper (48, 128, 192, 192, 128 channels), batch
  norm after each convolution, a 1x1 convolution giving the classes.
- ``resnet``: a small ResNet (torchvision's BasicBlock; 32, 64, 128 channels, one block a stage), a 1x1
  convolution giving the classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from convscope.errors import UserError
from convscope.models.layers import ConvNet, check_widths

ENCODERS = ("simple", "alexnet", "resnet")
CLASSIFIERS = ("mlp", "shallow")
_LARGE_IMAGE = 64  # from this side up the grid is 1/8 of the image, below 1/4


def grid_factor(image_size: tuple[int, int]) -> int:
    return 8 if min(image_size) >= _LARGE_IMAGE else 4


def output_grid(image_size: tuple[int, int]) -> tuple[int, int]:
    """The cells each half predicts: the seed's 12 x 12 for 96 x 96 images, 8 x 8 for 32 x 32."""
    factor = grid_factor(image_size)
    if image_size[0] % factor or image_size[1] % factor:
        raise UserError(f"image_size = {tuple(image_size)}: the split-brain encoders need sides divisible by {factor}")
    return image_size[0] // factor, image_size[1] // factor


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def simple_encoder(in_channels: int, out_channels: int, image_size: tuple[int, int]) -> nn.Sequential:
    """The seed's SimpleAE (its comments give the sizes at 96 px)."""
    pad = 0 if grid_factor(image_size) == 8 else 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 12, 4, stride=2, padding=1), nn.BatchNorm2d(12), nn.ReLU(),  # 48 x 48
        nn.Conv2d(12, 24, 4, stride=2, padding=1), nn.BatchNorm2d(24), nn.ReLU(),  # 24 x 24
        nn.Conv2d(24, 48, 5, padding=pad), nn.BatchNorm2d(48), nn.ReLU(),  # 20 x 20
        nn.Conv2d(48, 96, 5, padding=pad), nn.BatchNorm2d(96), nn.ReLU(),  # 16 x 16
        nn.Conv2d(96, out_channels, 5, padding=pad),  # 12 x 12
    )  # fmt: skip


def alexnet_encoder(
    in_channels: int, out_channels: int, image_size: tuple[int, int], widths: Sequence[int] = (48, 128, 192, 192, 128)
) -> nn.Sequential:
    w = check_widths(widths, 5, "splitbrain alexnet")
    first_pool = [nn.MaxPool2d(3, 2, 1)] if grid_factor(image_size) == 8 else []
    return nn.Sequential(
        *_conv_bn(in_channels, w[0], 5, stride=2, padding=2),
        *first_pool,
        *_conv_bn(w[0], w[1], 5, padding=2),
        nn.MaxPool2d(3, 2, 1),
        *_conv_bn(w[1], w[2], 3, padding=1),
        *_conv_bn(w[2], w[3], 3, padding=1),
        *_conv_bn(w[3], w[4], 3, padding=1),
        nn.Conv2d(w[4], out_channels, 1),
    )


def _downsample(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


def resnet_encoder(
    in_channels: int, out_channels: int, image_size: tuple[int, int], widths: Sequence[int] = (32, 64, 128)
) -> nn.Sequential:
    w = check_widths(widths, 3, "splitbrain resnet")
    # The stem halves the image (cheap on a CPU); the stages halve it once more (1/4) or twice (1/8).
    strides = (1, 2, 2) if grid_factor(image_size) == 8 else (1, 2, 1)
    layers: list[nn.Module] = _conv_bn(in_channels, w[0], 3, stride=2, padding=1)
    for cin, cout, stride in zip((w[0], *w[:-1]), w, strides, strict=True):
        layers.append(BasicBlock(cin, cout, stride, downsample=_downsample(cin, cout, stride)))
    return nn.Sequential(*layers, nn.Conv2d(w[-1], out_channels, 1))


def make_encoder(
    encoder: str, in_channels: int, out_channels: int, image_size: tuple[int, int], widths: Sequence[int] = ()
) -> nn.Sequential:
    if encoder == "simple":
        if widths:
            raise UserError("model option widths: the simple encoder is the seed's and has fixed widths")
        return simple_encoder(in_channels, out_channels, image_size)
    if encoder == "alexnet":
        return alexnet_encoder(in_channels, out_channels, image_size, *([widths] if widths else []))
    if encoder == "resnet":
        return resnet_encoder(in_channels, out_channels, image_size, *([widths] if widths else []))
    raise UserError(f"model option encoder = {encoder!r}: expected one of: {', '.join(ENCODERS)}")


class SplitBrain(nn.Module):
    """The two halves: ``l_to_ab`` (1 -> ``ab_bins``**2 classes) and ``ab_to_l`` (2 -> ``l_bins`` classes).

    ``forward`` returns (ab logits, L logits), each N x classes x grid.
    """

    def __init__(
        self,
        image_size: tuple[int, int],
        *,
        encoder: str = "simple",
        l_bins: int = 100,
        ab_bins: int = 25,
        widths: Sequence[int] = (),
    ) -> None:
        super().__init__()
        for name, value in (("l_bins", l_bins), ("ab_bins", ab_bins)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise UserError(f"model option {name} = {value!r}: expected an integer >= 2")
        self.grid = output_grid(image_size)
        self.l_bins, self.ab_bins = l_bins, ab_bins
        self.l_to_ab = make_encoder(encoder, 1, ab_bins**2, image_size, widths)
        self.ab_to_l = make_encoder(encoder, 2, l_bins, image_size, widths)

    def forward(self, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.l_to_ab(lab[:, :1]), self.ab_to_l(lab[:, 1:])


class SplitBrainFeatures(SplitBrain):
    """Both halves' outputs concatenated along the channels (N x (ab_bins**2 + l_bins) x grid): the seed's
    ``full_emb``."""

    def forward(self, lab: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.cat(super().forward(lab), dim=1)


def classifier_head(
    kind: str, channels: int, cells: int, num_classes: int, hidden: int, dropout: float
) -> nn.Sequential:
    """Seed 001's classifiers on the flattened features: ``shallow`` (one linear layer), ``mlp`` (one hidden layer).

    A batch norm over the ``channels`` comes first, so that a pre-trained start and a random one both give the
    dense layers features of one scale (pre-trained halves output class scores tens of units large; why it
    matters: benchmarks/README.md, "Measurements behind the code").
    """
    norm = [nn.BatchNorm2d(channels), nn.Flatten()]
    features = channels * cells
    if kind == "shallow":
        return nn.Sequential(*norm, nn.Linear(features, num_classes))
    if kind == "mlp":
        return nn.Sequential(
            *norm, nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )
    raise UserError(f"model option classifier = {kind!r}: expected one of: {', '.join(CLASSIFIERS)}")


def splitbrain(
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    *,
    encoder: str = "simple",
    l_bins: int = 100,
    ab_bins: int = 25,
    widths: Sequence[int] = (),
) -> SplitBrain:
    """The pre-training network (``num_classes``, the data set's, is not used: the classes are colours)."""
    if in_channels != 3:
        raise UserError(f"model 'splitbrain' takes Lab images (3 channels), got {in_channels} channels")
    return SplitBrain(tuple(image_size), encoder=encoder, l_bins=l_bins, ab_bins=ab_bins, widths=widths)


def splitbrain_classifier(
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    *,
    encoder: str = "simple",
    classifier: str = "mlp",
    l_bins: int = 100,
    ab_bins: int = 25,
    widths: Sequence[int] = (),
    hidden: int = 512,
    dropout: float = 0.5,
) -> ConvNet:
    """Seed 001's SBNetClassifier: ``features`` are both halves (what ``transfer.init`` fills from a split-brain
    run and a linear probe freezes), ``head`` the classifier on their concatenated outputs."""
    if in_channels != 3:
        raise UserError(f"model 'splitbrain-classifier' takes Lab images (3 channels), got {in_channels} channels")
    body = SplitBrainFeatures(tuple(image_size), encoder=encoder, l_bins=l_bins, ab_bins=ab_bins, widths=widths)
    channels, cells = ab_bins**2 + l_bins, body.grid[0] * body.grid[1]
    return ConvNet(body, classifier_head(classifier, channels, cells, num_classes, hidden, dropout))
