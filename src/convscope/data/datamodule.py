"""From a recipe's ``[data]`` section to train / valid / test tensors and their loaders."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from convscope.data.augment import AugmentConfig, build_augment
from convscope.data.base import ImageSet
from convscope.data.catalog import Dataset, open_dataset
from convscope.data.loader import TensorLoader
from convscope.data.split import channel_stats, train_valid_split
from convscope.errors import UserError

# The held-out test split of a source without one must not move with the run's seed,
# or two runs of one recipe would be measured on different images.
TEST_SPLIT_SEED = 0


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

    def describe(self) -> dict:
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


def prepare_image_data(
    spec: str, *, valid_fraction: float, test_fraction: float, seed: int, skip_bad: bool = False, subset: int = 0
) -> ImageData:
    """Open ``spec`` and split it; mean and std are the training split's own."""
    dataset = open_dataset(spec, skip_bad=skip_bad)
    train = dataset.splits["train"]
    test = dataset.splits.get("test")
    if test is None:
        keep, held_out = train_valid_split(train.labels, test_fraction, TEST_SPLIT_SEED, field="data.test_fraction")
        if len(held_out) == 0:
            raise UserError(f"data set {spec!r} has no test split and data.test_fraction is 0")
        train, test = train.subset(keep), train.subset(held_out)
    valid = None
    if valid_fraction > 0:
        train_index, valid_index = train_valid_split(train.labels, valid_fraction, seed, field="data.valid_fraction")
        train, valid = train.subset(train_index), train.subset(valid_index)
    if 0 < subset < len(train):
        generator = torch.Generator().manual_seed(seed)
        train = train.subset(torch.randperm(len(train), generator=generator)[:subset].sort().values)
    if len(train) == 0:
        raise UserError(f"data set {spec!r} leaves no training images after the valid/test split")
    mean, std = channel_stats(train.images)
    return ImageData(dataset, train, valid, test, mean, std)


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
) -> TensorLoader:
    return TensorLoader(
        data,
        batch_size,
        shuffle=train,
        seed=seed,
        # Evaluation keeps only the deterministic steps (a centre crop) so it sees what training saw.
        augment=build_augment(augment, train=train) if augment is not None else None,
        mean=mean,
        std=std,
        device=device,
        channels_last=channels_last,
    )
