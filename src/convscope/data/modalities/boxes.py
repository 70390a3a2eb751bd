"""The boxes modality: images with object boxes, what the ``detect`` task learns from.

Data specs: ``fashion-scenes[:TRAIN,TEST]`` (generated scenes, their items' boxes), ``yolo:PATH`` (Ultralytics'
layout, :mod:`convscope.data.sources.yolo`) and ``coco:PATH`` (a COCO instances JSON,
:mod:`convscope.data.sources.coco`). Batches are ``(x float N x C x H x W normalised by the training split's mean
and std, boxes float N x M x 4 xyxy pixels, labels int64 N x M with -1 for padding)``.

Splits: the source's ``test`` split tests, else its ``val`` split (Ultralytics measures on it), else a
``data.test_fraction`` of the training images held out with a fixed seed; ``val`` validates when it is not the test
split, else a random ``data.valid_fraction`` of the training images does (by the run's seed): the images that pick
the kept epoch are never the ones that measure it. Images of other sizes are letterboxed to
``data.image_size`` (``data.resize = "squash"`` scales each side instead; ``crop``, the default for classification,
would cut objects out, so it letterboxes here too).

Augmentation moves the boxes with the pixels: ``augment.hflip``, ``vflip`` and ``crop_padding`` (a shift: a box is
clipped to the image, and dropped when less than a pixel of it is left); ``pca_color`` changes colours only.
Rotations and centre crops are refused: a rotated box is no longer the object's tight box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from convscope.config import requested_size
from convscope.console import note
from convscope.data.augment import HorizontalFlip, Normalize, Pipeline, RandomCrop, VerticalFlip, build_augment
from convscope.data.boxes import MIN_BOX_SIDE, BoxSet, resize_boxset, scene_boxes
from convscope.data.images import conversion_note, decode_image, fit_size
from convscope.data.loader import TensorLoader, _generator
from convscope.data.modalities.image import TEST_SPLIT_SEED, unit_std_for_constant_channels
from convscope.data.scenes import open_scenes, parse_scene_spec
from convscope.data.sources.coco import read_coco
from convscope.data.sources.yolo import read_yolo
from convscope.data.split import channel_stats, color_pca
from convscope.distributed import rank_and_world_size
from convscope.errors import UserError

if TYPE_CHECKING:
    from convscope.config import Recipe

FORMS = "fashion-scenes[:TRAIN,TEST], yolo:PATH or coco:PATH"
_READERS = {"yolo": read_yolo, "coco": read_coco}


def is_box_spec(spec: str) -> bool:
    """Whether ``spec`` names a data set of boxes (so ``data info`` describes its boxes)."""
    kind = spec.partition(":")[0]
    return kind in _READERS or parse_scene_spec(spec) is not None


def box_resize(resize: str) -> str:
    """The resize boxes use for ``data.resize``: letterboxing in place of cropping, which would cut objects out."""
    return "squash" if resize == "squash" else "pad"


def open_boxes(
    spec: str, *, skip_bad: bool = False, size: tuple[int, int] | None = None, resize: str = "pad"
) -> tuple[dict[str, BoxSet], list[str]]:
    """The splits of ``spec`` (``train`` and any of ``val``, ``test``) at ``size`` and the inputs skipped as bad."""
    if parse_scene_spec(spec) is not None:
        splits = {name: scene_boxes(scenes) for name, scenes in open_scenes(spec).items()}
        skipped: list[str] = []
    else:
        kind, colon, path = spec.partition(":")
        if not colon or kind not in _READERS:
            raise UserError(f"data set '{spec}' has no boxes: expected {FORMS}")
        location = Path(path).expanduser()
        if not path or not location.exists():
            raise UserError(f"data path '{path}' does not exist" if path else f"data set '{spec}' needs a path")
        return _READERS[kind](location.resolve(), skip_bad=skip_bad, size=size, resize=resize)
    if size is not None:
        splits = {name: resize_boxset(data, size, resize) for name, data in splits.items()}
    return splits, skipped


def box_dataset_info(spec: str) -> dict[str, Any]:
    """What ``convscope data info`` says of a data set of boxes: classes, channels, image size, per split the
    images, the objects per class and the most objects in one image, and the inputs skipped as bad."""
    splits, skipped = open_boxes(spec, skip_bad=True)
    train = splits["train"]

    def describe(data: BoxSet) -> dict[str, Any]:
        counts = torch.bincount(data.labels[data.labels >= 0], minlength=len(data.classes)).tolist()
        return {"count": len(data), "objects_per_class": dict(zip(data.classes, counts, strict=True)),
                "max_boxes": data.max_boxes}  # fmt: skip

    return {
        "name": spec,
        "labels": "boxes",
        "classes": train.classes,
        "channels": train.channels,
        "image_size": list(train.image_size),
        "splits": {name: describe(data) for name, data in splits.items()},
        "skipped": skipped,
    }


class BoxLoader(TensorLoader):
    """:class:`TensorLoader` over a :class:`BoxSet`: batches ``(x, boxes, labels)``, boxes moved by the same
    flips and shifts as their images."""

    data: BoxSet

    def _batch(self, index: torch.Tensor, epoch: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.data.images[index].to(self.device).float().div_(255)
        boxes = self.data.boxes[index].to(self.device)
        labels = self.data.labels[index].to(self.device)
        if self.augment is not None:
            generator = _generator("augment", self.seed, epoch, batch, self.rank)
            x, boxes, labels = augment_with_boxes(self.augment, x, boxes, labels, generator)
        x = self.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, boxes, labels


def augment_with_boxes(
    pipeline: Pipeline, x: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``pipeline`` on ``x`` (the same draws as ``pipeline(x, generator)``) with its flips and shifts applied to
    ``boxes`` (N x M x 4 xyxy pixels) too; a box shifted out of the image becomes padding (label -1, box 0)."""
    height, width = x.shape[-2:]
    for op in pipeline.ops:
        if not hasattr(op, "sample"):
            raise UserError(f"augmentation {type(op).__name__} does not move boxes: not available for boxes")
        params = op.sample(x.shape[0], generator).to(x.device)
        x = op.apply(x, params)
        if isinstance(op, HorizontalFlip):
            flipped = torch.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], -1)
            boxes = torch.where(params.view(-1, 1, 1), flipped, boxes)
        elif isinstance(op, VerticalFlip):
            flipped = torch.stack([boxes[..., 0], height - boxes[..., 3], boxes[..., 2], height - boxes[..., 1]], -1)
            boxes = torch.where(params.view(-1, 1, 1), flipped, boxes)
        elif isinstance(op, RandomCrop):
            # The crop's (top, left) in the padded image: content moves by padding - offset.
            shift = (op.padding - params).flip(-1).to(boxes.dtype)  # (dx, dy)
            boxes = boxes + shift.repeat(1, 2)[:, None, :]
            limit = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
            boxes = boxes.clamp(min=torch.zeros_like(limit), max=limit)
        elif op.moves_pixels:
            raise UserError(f"augmentation {type(op).__name__} does not move boxes: not available for boxes")
    sides = boxes[..., 2:] - boxes[..., :2]
    alive = (labels >= 0) & (sides >= MIN_BOX_SIDE).all(-1)
    return x, boxes * alive[..., None], torch.where(alive, labels, torch.full_like(labels, -1))


@dataclass
class BoxData:
    name: str
    train: BoxSet
    valid: BoxSet | None
    test: BoxSet
    mean: list[float]
    std: list[float]
    resize: str
    skipped: list[str]

    @property
    def info(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "classes": self.train.classes,
            "labels": "boxes",
            "channels": self.train.channels,
            "image_size": list(self.train.image_size),
            "resize": self.resize,
            "mean": self.mean,
            "std": self.std,
            "sizes": {"train": len(self.train), "valid": len(self.valid or ()), "test": len(self.test)},
            "max_boxes": max(part.max_boxes for part in (self.train, self.valid, self.test) if part is not None),
            "skipped": self.skipped,
        }

    def loaders(self, recipe: Recipe, device: torch.device) -> dict[str, BoxLoader]:
        rank, world_size = rank_and_world_size()
        pca = color_pca(self.train.images, seed=recipe.train.seed) if recipe.augment.pca_color else None

        def loader(data: BoxSet, batch: int, train: bool = False) -> BoxLoader:
            return BoxLoader(data, batch, shuffle=train, seed=recipe.train.seed, mean=self.mean, std=self.std,
                             augment=build_augment(recipe.augment, train=train, color_pca=pca) if train else None,
                             device=device, channels_last=recipe.train.channels_last, rank=rank,
                             world_size=world_size, pad=train)  # fmt: skip

        loaders = {"train": loader(self.train, recipe.train.batch_size, train=True),
                   "test": loader(self.test, recipe.data.eval_batch_size)}  # fmt: skip
        if self.valid is not None:
            loaders["valid"] = loader(self.valid, recipe.data.eval_batch_size)
        return loaders


def _hold_out(data: BoxSet, fraction: float, seed: int, field: str) -> tuple[BoxSet, BoxSet | None]:
    """(the rest, a random ``fraction`` of ``data`` drawn with ``seed``), each in the data's order."""
    if not 0 <= fraction < 1:
        raise UserError(f"{field} = {fraction}: expected a fraction in [0, 1)")
    held = round(fraction * len(data))
    if not held:
        return data, None
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(order[held:].sort().values), data.subset(order[:held].sort().values)


def prepare_box_data(
    spec: str,
    *,
    valid_fraction: float,
    test_fraction: float,
    seed: int,
    skip_bad: bool = False,
    subset: int = 0,
    image_size: tuple[int, int] | None = None,
    resize: str = "pad",
) -> BoxData:
    """Open ``spec`` and split it (see the module's docstring); mean and std are the training split's own."""
    splits, skipped = open_boxes(spec, skip_bad=skip_bad, size=image_size, resize=resize)
    train, valid, test = splits["train"], splits.get("val"), splits.get("test")
    if test is None and valid is not None:
        test, valid = valid, None
    if test is None:
        train, test = _hold_out(train, test_fraction, TEST_SPLIT_SEED, "data.test_fraction")
        if test is None:
            raise UserError(f"data set {spec!r} has no test or val split, and data.test_fraction = {test_fraction} "
                            f"of its {len(train)} images holds out none: raise it or add a val split")  # fmt: skip
    if valid is None:
        train, valid = _hold_out(train, valid_fraction, seed, "data.valid_fraction")
    if 0 < subset < len(train):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        train = train.subset(order[:subset].sort().values)
    if len(train) == 0:
        raise UserError(f"data set {spec!r} leaves no training images after the valid/test split")
    mean, std = unit_std_for_constant_channels(spec, *channel_stats(train.images))
    return BoxData(spec, train, valid, test, mean, std, resize, skipped)


def _check_augment(recipe: Recipe) -> None:
    for key, value in (("rotation", recipe.augment.rotation), ("center_crop", recipe.augment.center_crop)):
        if value:
            raise UserError(f"augment.{key} = {value}: does not move boxes with the image (task "
                            f"{recipe.task.name!r}); use hflip, vflip or crop_padding")  # fmt: skip


class BoxModality:
    def prepare(self, recipe: Recipe, *, skip_bad: bool = False) -> BoxData:
        _check_augment(recipe)
        return prepare_box_data(
            recipe.data.name,
            valid_fraction=recipe.data.valid_fraction,
            test_fraction=recipe.data.test_fraction,
            seed=recipe.train.seed,
            skip_bad=skip_bad or recipe.data.skip_bad,
            subset=recipe.data.subset,
            image_size=requested_size(recipe.data.image_size),
            resize=box_resize(recipe.data.resize),
        )

    def evaluation_loader(self, recipe: Recipe, info: dict[str, Any], spec: str, device: torch.device) -> BoxLoader:
        size = tuple(info["image_size"])
        splits, _ = open_boxes(spec, skip_bad=recipe.data.skip_bad, size=size, resize=info["resize"])
        test = next(splits[name] for name in ("test", "val", "train") if name in splits)
        if test.classes != info["classes"]:
            raise UserError(f"data {spec!r} has classes {test.classes}, but the run was trained on {info['classes']}")
        if test.channels != info["channels"]:
            raise UserError(f"data {spec!r} has {test.channels}-channel images, the run expects {info['channels']}")
        return BoxLoader(test, recipe.data.eval_batch_size, shuffle=False, mean=info["mean"], std=info["std"],
                         device=device, channels_last=recipe.train.channels_last, pad=False)  # fmt: skip

    def model_inputs(self, recipe: Recipe, info: dict[str, Any]) -> dict[str, Any]:
        return {"in_channels": info["channels"], "image_size": tuple(info["image_size"])}

    def load_inputs(
        self, recipe: Recipe, info: dict[str, Any], inputs: Sequence[str], device: torch.device
    ) -> torch.Tensor:
        """Image files -> the run's channels and size (letterboxed as in training) -> normalised, one batch.
        :func:`convscope.data.boxes.placement` says where each file's pixels landed, to draw boxes back on it."""
        size, resize = tuple(info["image_size"]), info["resize"]
        images = []
        for name in inputs:
            path = Path(name)
            if not path.is_file():
                raise UserError(f"input image '{path}' does not exist")
            change = conversion_note(path, info["channels"], size, resize)
            if change:
                note(f"{change}, the run's image size")
            images.append(fit_size(decode_image(path, info["channels"]), size, resize))
        x = torch.stack(images).to(device).float().div_(255)
        return Normalize(info["mean"], info["std"])(x)
