"""Test-time augmentation (seed 002, after AlexNet): average the predictions over five crops and their mirror
images.

Crops: with a centre crop in the recipe (the network sees ``c x c`` of larger images), the five ``c x c``
crops come from the whole image, as AlexNet took 224 from 256. Without one, the network sees the whole image,
so the image is first padded by reflection by 1/8 of its side (4 px at 32x32) and the crops have the image's
own size: the centre crop is the image itself, the corners shift it by the padding. The views run one at a
time, so memory stays that of one evaluation batch.
"""

from __future__ import annotations

import torch
from torch import nn

from convscope.data.augment import ten_crops


def tta_geometry(image_size: tuple[int, int], center_crop: int) -> tuple[tuple[int, int], int]:
    """(crop size, padding) for images of ``image_size`` and the recipe's ``center_crop`` (0: none)."""
    if 0 < center_crop < min(image_size):
        return (center_crop, center_crop), 0
    return tuple(image_size), max(1, min(image_size) // 8)


class TestTimeAugmented(nn.Module):
    """Wraps a classifier: ``forward`` returns the log of the mean of the ten views' class probabilities, so a
    softmax of it is the averaged probabilities and cross-entropy on it is the loss of the averaged prediction.
    Its input is the uncropped (normalised) batch."""

    def __init__(self, model: nn.Module, size: tuple[int, int], padding: int) -> None:
        super().__init__()
        self.model = model
        self.size = size
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = ten_crops(x, self.size, self.padding)
        probs = sum(self.model(view).float().softmax(dim=1) for view in views)
        return (probs / len(views)).log()
