"""BoxSet, FashionScenes' boxes, boxes through a resize and through augmentation, and the boxes modality."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from convscope.config import AugmentConfig, DataConfig, NamedConfig, Recipe
from convscope.data.augment import HorizontalFlip, Pipeline, RandomCrop, VerticalFlip
from convscope.data.boxes import BoxSet, place_boxes, resize_boxset, scene_boxes
from convscope.data.images import fit_size
from convscope.data.modalities import get_modality
from convscope.data.modalities.boxes import augment_with_boxes
from convscope.data.scenes import generate_scenes
from convscope.errors import UserError
from tests.data.helpers import make_image
from tests.data.test_scenes import _items


def test_scene_boxes_keep_the_visible_items_and_pad_the_rest():
    scenes = generate_scenes(_items(), 60, seed=0)
    scenes.boxes[0, 0] = -1  # an item too dim to show: no box although it has a label
    data = scene_boxes(scenes)
    assert data.boxes.dtype == torch.float32 and data.labels.dtype == torch.int64 and len(data) == 60
    visible = (scenes.box_labels >= 0) & (scenes.boxes[..., 2] >= 0)
    assert torch.equal(data.labels >= 0, visible)
    assert torch.equal(data.boxes[visible], scenes.boxes[visible].float())
    assert bool((data.boxes[~visible] == 0).all())
    target = data.targets(1)
    assert torch.equal(target["labels"], scenes.box_labels[1][visible[1]])
    assert data.max_boxes == 3 and data.subset(torch.tensor([0, 1])).targets(1)["boxes"].shape == target["boxes"].shape


def test_boxset_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="labels must be N x M"):
        BoxSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, 2), ["a"], torch.zeros(2, 3, 4))


@pytest.mark.parametrize(("size", "resize"), [((32, 32), "pad"), ((24, 64), "pad"), ((40, 20), "squash")])
def test_boxes_land_where_fit_size_puts_their_pixels(size, resize):
    image = torch.zeros(1, 16, 32, dtype=torch.uint8)
    image[:, 4:12, 8:20] = 255  # the object: x 8..20, y 4..12 (end-exclusive)
    moved = fit_size(image, size, resize)[0] > 127
    rows, cols = moved.any(1).nonzero().flatten(), moved.any(0).nonzero().flatten()
    seen = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32)
    placed = place_boxes(torch.tensor([8.0, 4.0, 20.0, 12.0]), (16, 32), size, resize)
    assert torch.allclose(placed, seen, atol=1.0)  # antialiased edges may round either way
    data = resize_boxset(BoxSet(image[None], torch.tensor([[0]]), ["x"], placed.new_tensor([[[8.0, 4.0, 20.0, 12.0]]])),
                         size, resize)  # fmt: skip
    assert data.image_size == size and torch.allclose(data.boxes[0, 0], placed)


def test_crop_resize_is_refused_for_boxes():
    with pytest.raises(UserError, match=r"data\.resize = 'crop' for boxes"):
        place_boxes(torch.zeros(4), (8, 8), (4, 4), "crop")


def _torchvision(image, boxes, op, params):
    """One sample through torchvision's box-aware functional ops with the same parameters."""
    height, width = image.shape[-2:]
    boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
    if isinstance(op, (HorizontalFlip, VerticalFlip)):
        if not params:
            return image, boxes
        flip = TF.horizontal_flip if isinstance(op, HorizontalFlip) else TF.vertical_flip
        return flip(image), flip(boxes)
    top, left = params.tolist()
    p = op.padding
    image, boxes = TF.pad(image, [p], padding_mode="constant"), TF.pad(boxes, [p])
    return TF.crop(image, top, left, height, width), TF.crop(boxes, top, left, height, width)


@pytest.mark.parametrize("op", [HorizontalFlip(), VerticalFlip(), RandomCrop(6, "zeros")])
def test_augmented_boxes_match_torchvision(op):
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 20, 30, generator=generator)
    corner = torch.rand(8, 2, 2, generator=generator) * torch.tensor([20.0, 10.0])
    boxes = torch.cat([corner, corner + 2 + torch.rand(8, 2, 2, generator=generator) * 8], -1)
    boxes[:4, 0] = torch.tensor([0.0, 0.0, 2.0, 2.0])  # in a corner: a shift of 2 pixels pushes it out
    labels = torch.tensor([[0, 1]] * 7 + [[2, -1]])
    boxes[7, 1] = 0
    params = op.sample(8, torch.Generator().manual_seed(5))  # what augment_with_boxes draws from the same seed
    generator = torch.Generator().manual_seed(5)
    out_x, out_boxes, out_labels = augment_with_boxes(Pipeline([op]), x, boxes, labels, generator)
    for n in range(8):
        want_x, want_boxes = _torchvision(x[n], boxes[n], op, params[n])
        assert torch.equal(out_x[n], want_x)
        sides = want_boxes[:, 2:] - want_boxes[:, :2]
        alive = (labels[n] >= 0) & (sides >= 1).all(-1)  # torchvision's SanitizeBoundingBoxes(min_size=1)
        assert torch.equal(out_labels[n] >= 0, alive)
        assert torch.allclose(out_boxes[n][alive], want_boxes[alive].as_subclass(torch.Tensor))
        assert bool((out_boxes[n][~alive] == 0).all())
    if isinstance(op, RandomCrop):
        assert int((out_labels < 0).sum()) > 1  # some box was shifted out, not only the padding


def _recipe(data: str, **augment) -> Recipe:
    return Recipe(task=NamedConfig("detect"), data=DataConfig(name=data, eval_batch_size=16),
                  augment=AugmentConfig(**augment))  # fmt: skip


def test_boxes_modality_on_fashion_scenes():
    modality = get_modality("boxes")
    recipe = _recipe("fashion-scenes:40,10", hflip=True, crop_padding=4)
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, batch_size=8))
    data = modality.prepare(recipe)
    info = data.info
    assert info["sizes"] == {"train": 36, "valid": 4, "test": 10} and info["labels"] == "boxes"
    assert info["image_size"] == [64, 64] and info["channels"] == 1 and info["max_boxes"] == 3
    assert modality.model_inputs(recipe, info) == {"in_channels": 1, "image_size": (64, 64)}
    loaders = data.loaders(recipe, torch.device("cpu"))
    x, boxes, labels = next(iter(loaders["train"]))
    assert x.shape == (8, 1, 64, 64) and boxes.shape == (8, 3, 4) and labels.shape == (8, 3)
    again = next(iter(loaders["train"]))  # the same (seed, epoch, batch): the same draws
    assert torch.equal(x, again[0]) and torch.equal(boxes, again[1])
    x, boxes, labels = next(iter(loaders["test"]))  # no augmentation: the stored boxes
    assert torch.equal(boxes, data.test.boxes[:10]) and torch.equal(labels, data.test.labels[:10])
    assert abs(float(x.mean())) < 0.5  # normalised by the training split's statistics
    evaluation = modality.evaluation_loader(recipe, info, "fashion-scenes:40,10", torch.device("cpu"))
    assert torch.equal(next(iter(evaluation))[1], boxes)


def test_rotation_is_refused_for_boxes():
    with pytest.raises(UserError, match=r"augment.rotation = 10.0: does not move boxes"):
        get_modality("boxes").prepare(_recipe("fashion-scenes:10,4", rotation=10.0))


def test_other_data_is_refused_with_the_forms():
    with pytest.raises(UserError, match="has no boxes: expected fashion-scenes"):
        get_modality("boxes").prepare(_recipe("fashion-mnist"))


def test_load_inputs_letterboxes_to_the_run_size(tmp_path):
    path = make_image(tmp_path / "photo.png", size=(10, 20), mode="L")
    info = {"image_size": [20, 20], "resize": "pad", "channels": 1, "mean": [0.0], "std": [1.0]}
    x = get_modality("boxes").load_inputs(_recipe("fashion-scenes:10,4"), info, [str(path)], torch.device("cpu"))
    assert x.shape == (1, 1, 20, 20)
    assert float(x[0, 0, :5].abs().max()) == 0 and float(x[0, 0, 5:15].max()) > 0  # black bands above and below
