"""Images in CIE Lab (the ``lab`` modality): the image modality's data, augmentation and loaders, with each
batch converted from RGB to scaled Lab on the device instead of normalised by the channel mean and std.

Split-brain tasks learn from it: one half of a network sees L, the other a and b. Greyscale data has no a and
b, so it is refused with the data set's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from convscope.data.lab import rgb_to_lab, scale_lab
from convscope.data.loader import TensorLoader
from convscope.data.modalities.image import ImageData, ImageModality
from convscope.errors import UserError

if TYPE_CHECKING:
    from convscope.config import Recipe

# The loaders hand RGB in [0, 1] to the Lab conversion: normalisation by the identity.
_RGB = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def require_colour(channels: int, dataset: str) -> None:
    if channels != 3:
        raise UserError(
            f"data set {dataset!r} has {channels} channel{'s' if channels != 1 else ''} (greyscale): the split-brain "
            "task splits colour images into L and ab (Lab colour space) and needs 3-channel RGB data"
        )


class LabLoader:
    """Batches of ``loader`` (RGB in [0, 1]) as (scaled Lab, labels); positioned like the loader it wraps."""

    def __init__(self, loader: TensorLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.loader.set_epoch(epoch, start_batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            lab = scale_lab(rgb_to_lab(x))
            if self.loader.channels_last:
                lab = lab.contiguous(memory_format=torch.channels_last)
            yield lab, y


@dataclasses.dataclass
class LabData:
    images: ImageData

    @property
    def train(self):
        return self.images.train

    @property
    def info(self) -> dict[str, Any]:
        return {**self.images.info, "input": "lab"}

    def loaders(self, recipe: Recipe, device: torch.device) -> dict[str, LabLoader]:
        rgb = dataclasses.replace(self.images, **_RGB)
        return {name: LabLoader(loader) for name, loader in rgb.loaders(recipe, device).items()}


class LabModality(ImageModality):
    def prepare(self, recipe: Recipe, *, skip_bad: bool = False) -> LabData:  # type: ignore[override]
        data = super().prepare(recipe, skip_bad=skip_bad)
        require_colour(data.dataset.channels, data.dataset.name)
        return LabData(data)

    def evaluation_loader(self, recipe: Recipe, info: dict[str, Any], spec: str, device: torch.device) -> LabLoader:
        return LabLoader(super().evaluation_loader(recipe, {**info, **_RGB}, spec, device))

    def load_inputs(
        self, recipe: Recipe, info: dict[str, Any], inputs: Sequence[str], device: torch.device
    ) -> torch.Tensor:
        return scale_lab(rgb_to_lab(super().load_inputs(recipe, {**info, **_RGB}, inputs, device)))
