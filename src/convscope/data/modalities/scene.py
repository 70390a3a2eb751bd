"""The scene modality: images with multi-hot labels and, where the data has them, pixel masks.

What the ``weakseg`` and ``segment`` tasks learn from. A scene data set (``fashion-scenes``) gives batches
``(images, multi-hot labels, masks)``; any other image data set (``cifar10``, ``fashion-mnist``, ...) is the image
modality's, batches ``(images, class indices)`` that the task reads as one-hot labels, without masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from convscope.data.augment import build_augment
from convscope.data.loader import TensorLoader, _generator
from convscope.data.modalities.image import ImageModality
from convscope.data.scenes import BACKGROUND, SceneSet, open_scenes, parse_scene_spec
from convscope.data.split import channel_stats
from convscope.errors import UserError

if TYPE_CHECKING:
    from convscope.config import Recipe


class SceneLoader(TensorLoader):
    """:class:`TensorLoader` over scenes: batches ``(x, labels float N x K, masks int64 N x H x W)``, the masks
    moved by the same crops and flips as their images."""

    data: SceneSet

    def _batch(self, index: torch.Tensor, epoch: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.data.images[index].to(self.device).float().div_(255)
        labels = self.data.labels[index].to(self.device).float()
        masks = self.data.masks[index].to(self.device).long()
        if self.augment is not None:
            x, masks = self.augment.with_masks(x, masks, _generator("augment", self.seed, epoch, batch, self.rank))
        x = self.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels, masks


@dataclass
class SceneData:
    name: str
    train: SceneSet
    valid: SceneSet | None
    test: SceneSet
    mean: list[float]
    std: list[float]

    @property
    def info(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "classes": self.train.classes,
            "background": BACKGROUND,  # mask value 0; class c is mask value c + 1
            "labels": "multi-hot",
            "masks": True,
            "channels": self.train.channels,
            "image_size": list(self.train.image_size),
            "mean": self.mean,
            "std": self.std,
            "sizes": {"train": len(self.train), "valid": len(self.valid or ()), "test": len(self.test)},
            "skipped": [],
        }

    def loaders(self, recipe: Recipe, device: torch.device) -> dict[str, SceneLoader]:
        def loader(data: SceneSet, batch: int, train: bool = False) -> SceneLoader:
            augment = build_augment(recipe.augment, train=train)
            return SceneLoader(data, batch, shuffle=train, seed=recipe.train.seed, augment=augment, mean=self.mean,
                               std=self.std, device=device, channels_last=recipe.train.channels_last)  # fmt: skip

        loaders = {"train": loader(self.train, recipe.train.batch_size, train=True),
                   "test": loader(self.test, recipe.data.eval_batch_size)}  # fmt: skip
        if self.valid is not None:
            loaders["valid"] = loader(self.valid, recipe.data.eval_batch_size)
        return loaders


def prepare_scene_data(spec: str, *, valid_fraction: float, seed: int, subset: int = 0) -> SceneData:
    """Open the scene data set ``spec``; the valid scenes are a random ``valid_fraction`` of its training scenes."""
    if not 0 <= valid_fraction < 1:
        raise UserError(f"data.valid_fraction = {valid_fraction}: expected a fraction in [0, 1)")
    splits = open_scenes(spec)
    train, valid = splits["train"], None
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    held_out = round(valid_fraction * len(train))
    if held_out:
        train, valid = train.subset(order[held_out:].sort().values), train.subset(order[:held_out].sort().values)
    if 0 < subset < len(train):
        train = train.subset(torch.arange(subset))  # the scenes are already in random order
    if len(train) == 0:
        raise UserError(f"data set {spec!r} leaves no training scenes after the valid split")
    mean, std = channel_stats(train.images)
    return SceneData(spec, train, valid, splits["test"], mean, std)


class SceneModality:
    def __init__(self) -> None:
        self.images = ImageModality()  # what it is for data sets that are not scenes

    def prepare(self, recipe: Recipe, *, skip_bad: bool = False) -> SceneData | Any:
        if parse_scene_spec(recipe.data.name) is None:
            return self.images.prepare(recipe, skip_bad=skip_bad)
        return prepare_scene_data(recipe.data.name, valid_fraction=recipe.data.valid_fraction,
                                  seed=recipe.train.seed, subset=recipe.data.subset)  # fmt: skip

    def evaluation_loader(self, recipe: Recipe, info: dict[str, Any], spec: str, device: torch.device) -> Any:
        if parse_scene_spec(spec) is None:
            return self.images.evaluation_loader(recipe, info, spec, device)
        test = open_scenes(spec)["test"]
        if test.classes != info["classes"]:
            raise UserError(f"data {spec!r} has classes {test.classes}, but the run was trained on {info['classes']}")
        return SceneLoader(test, recipe.data.eval_batch_size, shuffle=False, mean=info["mean"], std=info["std"],
                           device=device, channels_last=recipe.train.channels_last)  # fmt: skip

    def model_inputs(self, recipe: Recipe, info: dict[str, Any]) -> dict[str, Any]:
        return self.images.model_inputs(recipe, info)

    def load_inputs(self, recipe: Recipe, info: dict[str, Any], inputs: Sequence[str], device: torch.device):
        return self.images.load_inputs(recipe, info, inputs, device)
