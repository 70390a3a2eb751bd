"""FashionScenes: 64 x 64 scenes of 1 to 3 Fashion-MNIST items with their image label, pixel mask and boxes.

The benchmark with ground truth for weakly supervised segmentation (issue 5): a network trained on the
multi-hot image labels only is measured against the masks it never saw. The generator is a pure function
of (items, count, seed): the same scenes on every machine, so nothing is cached.

Rules: the items of a scene have distinct classes; each is pasted whole (28 x 28) at a random position, and
two items' boxes share at most ``max_overlap`` of an item's area (a position is drawn again otherwise, and an
item that finds no place after ``PLACEMENT_TRIES`` draws is left out, so a scene keeps at least its first item).
Items are combined by the pixelwise maximum (black is Fashion-MNIST's background); a pixel belongs to the item
that is brightest there when that item's intensity is above ``threshold``, to the background otherwise.
Training scenes use only Fashion-MNIST training items and test scenes only its test items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from convscope.data.base import ImageSet
from convscope.errors import UserError

SCENE_SIZE = 64
MAX_ITEMS = 3
MAX_OVERLAP = 0.25  # of an item's 28 x 28 box
MASK_THRESHOLD = 26  # of 255 (0.1): dimmer item pixels are background, as black is
PLACEMENT_TRIES = 100
BACKGROUND = "background"
# The named data set: train / test scene counts and their (fixed) seeds.
DEFAULT_SIZES = {"train": 20_000, "test": 2_000}
SPLIT_SEEDS = {"train": 0, "test": 1}
# Scenes already generated in this process, by (spec, the Fashion-MNIST source's cache key): a benchmark that
# trains several runs on them generates them once.
_GENERATED: dict[tuple[str, str], dict[str, SceneSet]] = {}


@dataclass
class SceneSet(ImageSet):
    """Scenes of one split: an :class:`ImageSet` whose labels are multi-hot, with masks and boxes.

    ``images`` uint8 N x 1 x H x W; ``labels`` uint8 N x K multi-hot (K item classes); ``masks`` uint8 N x H x W
    with 0 for the background and c + 1 for class c; ``boxes`` int16 N x MAX_ITEMS x 4 (x0, y0, x1, y1: the
    tight box of the item's mask pixels before other items covered it, end-exclusive) and ``box_labels`` int64
    N x MAX_ITEMS (-1 where a scene has fewer items).
    """

    masks: torch.Tensor
    boxes: torch.Tensor
    box_labels: torch.Tensor

    def check_labels(self) -> None:
        if self.labels.shape != (self.images.shape[0], len(self.classes)):
            raise ValueError("scene labels must be N x K multi-hot, one row per scene")

    def subset(self, index: torch.Tensor) -> SceneSet:
        return SceneSet(self.images[index], self.labels[index], self.classes, self.masks[index], self.boxes[index],
                        self.box_labels[index])  # fmt: skip


def _overlap_ok(top: int, left: int, placed: list[tuple[int, int]], side: int, max_overlap: float) -> bool:
    for other_top, other_left in placed:
        rows = max(0, side - abs(top - other_top))
        cols = max(0, side - abs(left - other_left))
        if rows * cols > max_overlap * side * side:
            return False
    return True


def generate_scenes(
    items: ImageSet,
    count: int,
    *,
    seed: int,
    size: int = SCENE_SIZE,
    max_items: int = MAX_ITEMS,
    max_overlap: float = MAX_OVERLAP,
    threshold: int = MASK_THRESHOLD,
) -> SceneSet:
    """``count`` scenes drawn from ``items`` (one-channel, labelled) with ``seed``; see the module's rules."""
    side = items.image_size[0]
    classes = len(items.classes)
    if items.channels != 1 or items.image_size != (side, side) or side > size:
        raise UserError(
            f"scenes need square one-channel items no larger than {size}; got {tuple(items.images.shape[1:])}"
        )
    if not 1 <= max_items <= classes:
        raise UserError(f"scenes of up to {max_items} items of distinct classes need 1 to {classes} items")
    pixels = items.images[:, 0].numpy()
    by_class = [np.flatnonzero(items.labels.numpy() == c) for c in range(classes)]
    present = [c for c in range(classes) if len(by_class[c])]
    if len(present) < max_items:
        raise UserError(f"scenes of {max_items} items of distinct classes need items of {max_items} classes")
    rng = np.random.default_rng(seed)
    images = np.zeros((count, size, size), np.uint8)
    masks = np.zeros((count, size, size), np.uint8)
    labels = np.zeros((count, classes), np.uint8)
    boxes = np.full((count, max_items, 4), -1, np.int16)
    box_labels = np.full((count, max_items), -1, np.int64)
    for n in range(count):
        chosen = rng.choice(present, size=rng.integers(1, max_items + 1), replace=False)
        placed: list[tuple[int, int]] = []
        brightest = np.zeros((size, size), np.uint8)  # intensity of the item that owns each pixel
        for c in chosen:
            for _ in range(PLACEMENT_TRIES):
                top, left = rng.integers(0, size - side + 1, size=2)
                if _overlap_ok(top, left, placed, side, max_overlap):
                    break
            else:
                continue
            item = pixels[rng.choice(by_class[c])]
            window = np.s_[top : top + side, left : left + side]
            owns = (item > threshold) & (item > brightest[window])
            masks[n][window][owns] = c + 1
            brightest[window] = np.where(owns, item, brightest[window])
            images[n][window] = np.maximum(images[n][window], item)
            rows, cols = np.nonzero(item > threshold)
            k = len(placed)
            if len(rows):
                boxes[n, k] = (left + cols.min(), top + rows.min(), left + cols.max() + 1, top + rows.max() + 1)
            box_labels[n, k] = c
            labels[n, c] = 1
            placed.append((top, left))
    return SceneSet(torch.from_numpy(images)[:, None], torch.from_numpy(labels), list(items.classes),
                    torch.from_numpy(masks), torch.from_numpy(boxes), torch.from_numpy(box_labels))  # fmt: skip


def parse_scene_spec(spec: str) -> dict[str, int] | None:
    """Scene counts for ``fashion-scenes`` or ``fashion-scenes:TRAIN,TEST``; None for any other spec."""
    name, colon, counts = spec.partition(":")
    if name != "fashion-scenes":
        return None
    if not colon:
        return dict(DEFAULT_SIZES)
    parts = counts.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise UserError(f"data set '{spec}': expected fashion-scenes or fashion-scenes:TRAIN,TEST (two positive "
                        "numbers of scenes)")  # fmt: skip
    return {"train": int(parts[0]), "test": int(parts[1])}


def open_scenes(spec: str) -> dict[str, SceneSet]:
    """The named data set ``fashion-scenes`` (``:TRAIN,TEST`` for other counts): train scenes from Fashion-MNIST's
    training items, test scenes from its test items, each split with its own fixed seed."""
    from convscope.data.catalog import open_dataset

    sizes = parse_scene_spec(spec)
    if sizes is None:
        raise UserError(f"data set '{spec}' is not a scene data set: expected fashion-scenes[:TRAIN,TEST]")
    source = open_dataset("fashion-mnist")
    key = (spec, source.key)
    if key not in _GENERATED:
        _GENERATED[key] = {split: generate_scenes(source.splits[split], count, seed=SPLIT_SEEDS[split])
                           for split, count in sizes.items()}  # fmt: skip
    return _GENERATED[key]
