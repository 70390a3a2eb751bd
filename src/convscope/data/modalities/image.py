"""Images: from a recipe's ``[data]`` section to train / valid / test tensors and their loaders."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from convscope.config import AugmentConfig, check_label_fraction, requested_size
from convscope.console import note
from convscope.data.augment import Normalize, build_augment
from convscope.data.base import ImageSet
from convscope.data.catalog import Dataset, open_dataset
from convscope.data.images import RESIZED, conversion_note, decode_image, fit_size
from convscope.data.loader import TensorLoader
from convscope.data.split import channel_stats, color_pca, train_valid_split
from convscope.distributed import rank_and_world_size
from convscope.errors import UserError

if TYPE_CHECKING:
    from convscope.config import Recipe

# The held-out test split of a source without one must not move with the run's seed,
# or two runs of one recipe would be measured on different images.
TEST_SPLIT_SEED = 0
# ``data.normalize``: by the training split's own channel statistics, or by ImageNet's, which pretrained
# ImageNet weights (``transfer.init = "torchvision:resnet18"``) were trained with.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class ImageData:
    dataset: Dataset
    train: ImageSet
    valid: ImageSet | None
    test: ImageSet
    mean: list[float]
    std: list[float]

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def info(self) -> dict[str, Any]:
        """What a run directory records about its data, enough to rebuild the evaluation transform."""
        return {
            "dataset": self.dataset.name,
            "classes": self.classes,
            "channels": self.dataset.channels,
            "image_size": list(self.dataset.image_size),
            "mean": self.mean,
            "std": self.std,
            "sizes": {
                "train": len(self.train),
                "valid": len(self.valid) if self.valid is not None else 0,
                "test": len(self.test),
            },
            "skipped": self.dataset.skipped,
        }

    def normalized_sample(self, count: int) -> torch.Tensor:
        """Up to ``count`` training images spread over the split, normalised as the network sees them (no
        augmentation): what a layer fitted to the data before training (``fastnet``'s whitening stem) is fitted to."""
        step = max(1, len(self.train) // count)
        return Normalize(self.mean, self.std)(self.train.images[::step][:count].float().div(255))

    def loaders(self, recipe: Recipe, device: torch.device) -> dict[str, TensorLoader]:
        common = {
            "mean": self.mean,
            "std": self.std,
            "device": device,
            "channels_last": recipe.train.channels_last,
            "augment": recipe.augment,
        }
        # Under torchrun each rank takes its shard of every split (training shards padded to equal length).
        rank, world_size = rank_and_world_size()
        common.update(rank=rank, world_size=world_size)
        batch, eval_batch = recipe.train.batch_size, recipe.data.eval_batch_size
        pca = color_pca(self.train.images, seed=recipe.train.seed) if recipe.augment.pca_color else None
        loaders = {
            "train": make_loader(self.train, batch, train=True, seed=recipe.train.seed, color_pca=pca, **common),
            "test": make_loader(self.test, eval_batch, **common),
        }
        if self.valid is not None:
            loaders["valid"] = make_loader(self.valid, eval_batch, **common)
        return loaders


def select_classes(dataset: Dataset, classes: Sequence[str]) -> Dataset:
    """``dataset`` with only ``classes`` (every split), labelled 0, 1, ... in the order given."""
    if not classes:
        return dataset
    unknown = [name for name in classes if name not in dataset.classes]
    if unknown or len(set(classes)) != len(classes):
        problem = f"has no class {unknown[0]!r}" if unknown else "is given a class twice"
        raise UserError(f"data.classes: data set {dataset.name!r} {problem}; its classes: {', '.join(dataset.classes)}")
    old_labels = torch.tensor([dataset.classes.index(name) for name in classes])
    splits = {}
    for name, part in dataset.splits.items():
        keep = torch.isin(part.labels, old_labels).nonzero().flatten()
        new_label = torch.full((len(dataset.classes),), -1, dtype=torch.long)
        new_label[old_labels] = torch.arange(len(classes))
        splits[name] = ImageSet(part.images[keep], new_label[part.labels[keep]], list(classes))
    return dataclasses.replace(dataset, splits=splits)


def take_per_class(data: ImageSet, per_class: int, seed: int) -> ImageSet:
    """``per_class`` random images of each class (all of a class that has fewer), drawn with ``seed``."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    keep = [order[data.labels[order] == label][:per_class] for label in range(len(data.classes))]
    return data.subset(torch.cat(keep).sort().values)


# The most a held-out split may take of a small data set when its fraction grows to reach ``min_split`` images.
MAX_SMALL_FRACTION = 0.2
# The images a held-out split is grown to on a small data set, unless its fraction is set explicitly: 15 test images
# measure an accuracy to +-20 points, 30 to about +-15.
SMALL_DATA_SPLIT = 30


def fraction_by_size(fraction: float, count: int, min_split: int) -> float:
    """``fraction`` of ``count`` images, raised on a small data set so that it holds ``min_split`` images, up to
    :data:`MAX_SMALL_FRACTION`; a fraction of 0 (no split) stays 0. With 300 or more images and the default 0.1
    nothing changes."""
    if fraction <= 0 or min_split <= 0 or count <= 0:
        return fraction
    return max(fraction, min(MAX_SMALL_FRACTION, min_split / count))


def prepare_image_data(
    spec: str,
    *,
    valid_fraction: float,
    test_fraction: float,
    seed: int,
    skip_bad: bool = False,
    subset: int = 0,
    classes: Sequence[str] = (),
    per_class: int = 0,
    label_fraction: float = 1.0,
    normalize: str = "data",
    image_size: tuple[int, int] | None = None,
    resize: str = "crop",
    min_split: int = 0,
) -> ImageData:
    """Open ``spec`` (only ``classes`` when given) and split it; mean and std are the training split's own.

    ``per_class`` keeps that many training images of each class, ``label_fraction`` that fraction of each class,
    before the valid split (few-label experiments: the validation images come out of the labelled ones).
    ``image_size`` and ``resize``: see :func:`convscope.data.catalog.open_dataset`. ``min_split``: on a small data
    set the test and valid fractions grow (up to :data:`MAX_SMALL_FRACTION`) until the split holds that many images.
    """
    if per_class < 0:
        raise UserError(f"data.per_class = {per_class}: expected an integer >= 0 (0: every image)")
    check_label_fraction(label_fraction)
    dataset = select_classes(open_dataset(spec, skip_bad=skip_bad, size=image_size, resize=resize), classes)
    train = dataset.splits["train"]
    test = dataset.splits.get("test")
    if test is None:
        test_fraction = fraction_by_size(test_fraction, len(train), min_split)
        keep, held_out = train_valid_split(train.labels, test_fraction, TEST_SPLIT_SEED, field="data.test_fraction")
        if len(held_out) == 0:
            raise UserError(empty_test_split(spec, test_fraction, train.labels))
        train, test = train.subset(keep), train.subset(held_out)
    if per_class:
        train = take_per_class(train, per_class, seed)
    if label_fraction < 1:
        # The stratified draw of the valid split, used to keep a fraction of every class.
        train = train.subset(train_valid_split(train.labels, label_fraction, seed, field="data.label_fraction")[1])
    valid = None
    valid_fraction = fraction_by_size(valid_fraction, len(train), min_split)
    if valid_fraction > 0:
        train_index, valid_index = train_valid_split(train.labels, valid_fraction, seed, field="data.valid_fraction")
        train, valid = train.subset(train_index), train.subset(valid_index)
    if 0 < subset < len(train):
        generator = torch.Generator().manual_seed(seed)
        train = train.subset(torch.randperm(len(train), generator=generator)[:subset].sort().values)
    if len(train) == 0:
        raise UserError(f"data set {spec!r} leaves no training images after the valid/test split")
    if normalize == "imagenet":
        if dataset.channels != 3:
            raise UserError(f"data.normalize = 'imagenet' needs colour images; data set {spec!r} has "
                            f"{dataset.channels} channel(s): use data.normalize = 'data'")  # fmt: skip
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    else:
        mean, std = unit_std_for_constant_channels(spec, *channel_stats(train.images))
    return ImageData(dataset, train, valid, test, mean, std)


def empty_test_split(spec: str, fraction: float, labels: torch.Tensor) -> str:
    """Why a held-out test split came out empty, with what to set: the split is stratified, so each class gives
    ``round(fraction * its images)``, keeping one for training; a small class gives none."""
    if fraction == 0:
        return f"data set {spec!r} has no test split and data.test_fraction is 0"
    largest = int(torch.bincount(labels.reshape(-1).long()).max()) if labels.numel() else 0
    counts = f"data.test_fraction = {fraction} of its {labels.numel()} images ({largest} in its largest class)"
    if largest < 2:
        return (f"data set {spec!r} has no test split, and {counts} holds out none: a class keeps its only image "
                "for training; add images, or give the folder a test/ split beside train/")  # fmt: skip
    needed = math.ceil(100 / largest) / 100  # round(needed * largest) >= 1: one test image from the largest class
    return (
        f"data set {spec!r} has no test split, and {counts} rounds to 0 test images in every class: set "
        f"data.test_fraction to {needed} or more, add images, or give the folder a test/ split beside train/"
    )


CHANNEL_NAMES = {1: ("gray",), 3: ("red", "green", "blue")}


def unit_std_for_constant_channels(spec: str, mean: list[float], std: list[float]) -> tuple[list[float], list[float]]:
    """A channel with the same value in every training pixel (a red-only data set's green and blue) carries no
    information: it is centred to 0 and left unscaled (std 1), with a note, rather than divided by zero. Every
    channel constant means every image is the same flat colour: nothing to learn, an error."""
    constant = [c for c, value in enumerate(std) if value == 0]
    if not constant:
        return mean, std
    names = CHANNEL_NAMES.get(len(std), ())
    shown = ", ".join(f"channel {c + 1}" + (f" ({names[c]})" if names else "") + f" = {round(mean[c] * 255)}"
                      for c in constant)  # fmt: skip
    if len(constant) == len(std):
        raise UserError(f"data set {spec!r}: every pixel of every training image has the same value ({shown}): "
                        "the images carry no information to learn from")  # fmt: skip
    note(f"data set {spec!r}: every training image has the same value in {shown}: the images carry no "
         "information there; that channel is centred to 0 and not scaled (std 1)")  # fmt: skip
    return mean, [1.0 if value == 0 else value for value in std]


def make_loader(
    data: ImageSet,
    batch_size: int,
    *,
    mean: list[float],
    std: list[float],
    device: torch.device,
    train: bool = False,
    seed: int = 0,
    augment: AugmentConfig | None = None,
    channels_last: bool = False,
    color_pca: tuple[torch.Tensor, torch.Tensor] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> TensorLoader:
    alternate_flip = train and augment is not None and augment.hflip and augment.hflip_mode == "alternate"
    return TensorLoader(
        data,
        batch_size,
        shuffle=train,
        seed=seed,
        # Evaluation keeps only the deterministic steps (a centre crop) so it sees what training saw.
        augment=build_augment(augment, train=train, color_pca=color_pca, loader_flips=True)
        if augment is not None
        else None,
        alternate_flip=alternate_flip,
        mean=mean,
        std=std,
        device=device,
        channels_last=channels_last,
        rank=rank,
        world_size=world_size,
        pad=train,
    )


class ImageModality:
    def prepare(self, recipe: Recipe, *, skip_bad: bool = False) -> ImageData:
        return prepare_image_data(
            recipe.data.name,
            valid_fraction=recipe.data.valid_fraction,
            test_fraction=recipe.data.test_fraction,
            seed=recipe.train.seed,
            skip_bad=skip_bad or recipe.data.skip_bad,
            subset=recipe.data.subset,
            classes=recipe.data.classes,
            per_class=recipe.data.per_class,
            label_fraction=recipe.data.label_fraction,
            normalize=recipe.data.normalize,
            image_size=requested_size(recipe.data.image_size),
            resize=recipe.data.resize,
            min_split=0 if {"data.valid_fraction", "data.test_fraction"} & recipe.explicit else SMALL_DATA_SPLIT,
        )

    def evaluation_loader(self, recipe: Recipe, info: dict[str, Any], spec: str, device: torch.device) -> TensorLoader:
        dataset = select_classes(open_dataset(spec, skip_bad=recipe.data.skip_bad), recipe.data.classes)
        if dataset.classes != info["classes"]:
            raise UserError(
                f"data {spec!r} has classes {dataset.classes}, but the run was trained on {info['classes']}"
            )
        if dataset.channels != info["channels"]:
            raise UserError(
                f"data {spec!r} has {dataset.channels}-channel images, the run expects {info['channels']} channels"
            )
        size = tuple(info["image_size"])
        if dataset.image_size != size:
            resize = recipe.data.resize
            note(f"data {spec!r}: {dataset.image_size[0]}x{dataset.image_size[1]} images {RESIZED[resize]} to "
                 f"{size[0]}x{size[1]} (data.resize = {resize!r}), the run's image size")  # fmt: skip
            dataset = select_classes(
                open_dataset(spec, skip_bad=recipe.data.skip_bad, size=size, resize=recipe.data.resize),
                recipe.data.classes,
            )
        test = dataset.splits.get("test", dataset.splits["train"])
        return make_loader(test, recipe.data.eval_batch_size, mean=info["mean"], std=info["std"], device=device,
                           channels_last=recipe.train.channels_last, augment=recipe.augment)  # fmt: skip

    def model_inputs(self, recipe: Recipe, info: dict[str, Any]) -> dict[str, Any]:
        crop = recipe.augment.center_crop
        # What the network sees: the stored size, or its centre crop.
        size = (crop, crop) if crop else tuple(info["image_size"])
        return {"in_channels": info["channels"], "image_size": size}

    def load_inputs(
        self, recipe: Recipe, info: dict[str, Any], inputs: Sequence[str], device: torch.device
    ) -> torch.Tensor:
        """Image files -> the run's channels and size -> the evaluation transform, as one batch."""
        images = []
        for name in inputs:
            path = Path(name)
            if not path.is_file():
                raise UserError(f"input image '{path}' does not exist")
            size, resize = tuple(info["image_size"]), recipe.data.resize
            change = conversion_note(path, info["channels"], size, resize)
            if change:  # predict, evaluate, explain and segment say alike what they did to an input
                crop = recipe.augment.center_crop
                note(
                    f"{change}, the run's image size"
                    + (f", then its centre {crop}x{crop} as in training" if crop else "")
                )
            images.append(fit_size(decode_image(path, info["channels"]), size, resize))
        x = torch.stack(images).to(device).float().div_(255)
        evaluation = build_augment(recipe.augment, train=False)
        if evaluation is not None:
            x = evaluation(x, torch.Generator())
        return Normalize(info["mean"], info["std"])(x)
