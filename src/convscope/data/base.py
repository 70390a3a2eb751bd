"""The in-memory form every image source decodes to."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageSet:
    """Decoded images of one split, kept as tensors (the airbench pattern).

    ``images`` is uint8, N x C x H x W (possibly memory-mapped from the cache);
    ``labels`` is int64, N; ``classes[i]`` is the name of label ``i``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 NCHW, got {self.images.dtype} {tuple(self.images.shape)}")
        self.check_labels()

    def check_labels(self) -> None:
        """One class index per image (a subclass with other labels, such as scenes' multi-hot rows, overrides it)."""
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.images.shape[2], self.images.shape[3])

    def subset(self, index: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.classes)


# A decoded data set: split name ("train", "test") -> ImageSet. Sources return
# at least "train"; "test" when the source has one.
Splits = dict[str, ImageSet]
