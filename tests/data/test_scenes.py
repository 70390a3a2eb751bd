"""FashionScenes: deterministic, and the generator's rules hold."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from convscope.data.augment import HorizontalFlip, Pipeline, RandomCrop, Rotation
from convscope.data.base import ImageSet
from convscope.data.scenes import MASK_THRESHOLD, MAX_OVERLAP, generate_scenes, open_scenes
from convscope.errors import UserError
from tests.data.helpers import idx_bytes


def _items(n: int = 200, seed: int = 0) -> ImageSet:
    """Items with a random blob of bright pixels (some dim ones too) on black, labels cycling 0..9."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        top, left = rng.integers(2, 10, size=2)
        images[i, top : top + 14, left : left + 14] = rng.integers(0, 256, (14, 14))
    labels = torch.arange(n) % 10
    return ImageSet(torch.from_numpy(images)[:, None], labels, [f"c{i}" for i in range(10)])


def test_same_seed_same_scenes_other_seed_other_scenes():
    items = _items()
    a, b, c = (generate_scenes(items, 30, seed=s) for s in (3, 3, 4))
    for key in ("images", "labels", "masks", "boxes", "box_labels"):
        assert torch.equal(getattr(a, key), getattr(b, key))
    assert not torch.equal(a.images, c.images)


def test_scenes_follow_the_rules():
    scenes = generate_scenes(_items(), 200, seed=0)
    assert scenes.images.shape == (200, 1, 64, 64) and scenes.masks.shape == (200, 64, 64)
    for n in range(len(scenes)):
        kept = scenes.box_labels[n][scenes.box_labels[n] >= 0]
        assert 1 <= len(kept) <= 3 and len(set(kept.tolist())) == len(kept)  # distinct classes
        assert set(scenes.labels[n].nonzero().flatten().tolist()) == set(kept.tolist())  # label = the items
        mask, image = scenes.masks[n].long(), scenes.images[n, 0]
        # The mask names only the scene's items, only on pixels bright enough, and every item shows.
        assert set(mask.unique().tolist()) - {0} == {c + 1 for c in kept.tolist()}
        assert bool((image[mask > 0] > MASK_THRESHOLD).all()) and bool((image[mask == 0] <= MASK_THRESHOLD).all())
        boxes = scenes.boxes[n][: len(kept)].long()
        for i in range(len(kept)):
            inside = mask[boxes[i, 1] : boxes[i, 3], boxes[i, 0] : boxes[i, 2]] == kept[i] + 1
            assert int(inside.sum()) == int((mask == kept[i] + 1).sum())  # the box holds all of the item's mask
            for j in range(i):  # tight boxes lie inside the placed ones, so they overlap no more than those may
                rows = (min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])).clamp(min=0)
                cols = (min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])).clamp(min=0)
                assert rows * cols <= MAX_OVERLAP * 28 * 28


def test_scenes_need_items_of_enough_classes():
    items = _items(20)
    two_classes = items.subset(torch.nonzero(items.labels < 2).flatten())
    with pytest.raises(UserError, match="items of 3 classes"):
        generate_scenes(two_classes, 5, seed=0)


def _fake_fashion_mnist(root: Path) -> Path:
    """Train items all of intensity 100, test items all of 200: a scene shows which split its items came from."""
    root.mkdir()
    for prefix, value, count in (("train", 100, 30), ("t10k", 200, 20)):
        images = np.full((count, 28, 28), value, np.uint8)
        labels = np.arange(count) % 10
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return root


def test_train_scenes_hold_training_items_only_and_test_scenes_test_items(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST", str(_fake_fashion_mnist(tmp_path / "fm")))
    splits = open_scenes("fashion-scenes:12,8")
    assert (len(splits["train"]), len(splits["test"])) == (12, 8)
    assert set(splits["train"].images.unique().tolist()) == {0, 100}
    assert set(splits["test"].images.unique().tolist()) == {0, 200}
    with pytest.raises(UserError, match="fashion-scenes:TRAIN,TEST"):
        open_scenes("fashion-scenes:12")


@pytest.mark.parametrize("op", [RandomCrop(3, "zeros"), RandomCrop(3), HorizontalFlip(1.0), Rotation(30)])
def test_masks_move_with_their_images(op):
    masks = torch.randint(0, 11, (4, 16, 16))
    x = masks[:, None].float() / 10  # the image shows its own mask
    moved, moved_masks = Pipeline([op]).with_masks(x, masks, torch.Generator().manual_seed(0))
    if isinstance(op, Rotation):  # bilinear images, nearest masks: compare where a pixel and its neighbours agree
        assert moved_masks.dtype == masks.dtype and set(moved_masks.unique().tolist()) <= set(range(11))
        assert not torch.equal(moved_masks, masks)
        return
    torch.testing.assert_close((moved[:, 0] * 10).round().long(), moved_masks)
    assert not torch.equal(moved_masks, masks)
