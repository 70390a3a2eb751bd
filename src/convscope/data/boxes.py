"""Images with object boxes: the in-memory form of a detection data set, and how boxes follow a resize.

A :class:`BoxSet` keeps one split as tensors (the airbench pattern, like :class:`convscope.data.base.ImageSet`):
boxes are xyxy in pixels of the stored images, end-exclusive as in torchvision (a box covering pixel columns 3 to 9
has x0 = 3, x1 = 10), padded per image to the split's most boxes with zero boxes labelled -1.

Sources (``yolo:``, ``coco:``) list :class:`LabelledImage` items, boxes normalised to their file's width and height;
:func:`decode_labelled` decodes the files to one size and places the boxes on it. Images of another shape are
brought to that size by ``squash`` (each side scaled) or ``pad`` (letterboxed: scaled to fit, centred on black, as
Ultralytics does); ``crop`` would cut objects out of the image, so boxes never use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from convscope.data.base import ImageSet
from convscope.data.images import default_size, fit_size, load_images
from convscope.errors import UserError

if TYPE_CHECKING:
    from convscope.data.scenes import SceneSet

BOX_RESIZE_MODES = ("pad", "squash")
# A box may stick out of its image by this fraction of the image's side (annotation tools round) before it is an
# error; what sticks out is clipped.
EDGE_TOLERANCE = 0.01
# A box narrower or lower than this many pixels after a crop or a clip is no object any more (torchvision's
# SanitizeBoundingBoxes default).
MIN_BOX_SIDE = 1.0


@dataclass
class BoxSet(ImageSet):
    """One split: an :class:`ImageSet` whose labels are per box. ``images`` uint8 N x C x H x W; ``labels`` int64
    N x M, -1 where padding; ``boxes`` float32 N x M x 4 xyxy pixels, 0 where padding; ``files`` where each image
    came from (None for generated scenes)."""

    boxes: torch.Tensor
    files: list[str] | None = None

    def check_labels(self) -> None:
        n = self.images.shape[0]
        if self.boxes.ndim != 3 or self.boxes.shape[0] != n or self.boxes.shape[2] != 4:
            raise ValueError(f"boxes must be N x M x 4, got {tuple(self.boxes.shape)} for {n} images")
        if self.labels.shape != self.boxes.shape[:2]:
            raise ValueError(f"labels must be N x M like the boxes, got {tuple(self.labels.shape)}")
        if self.files is not None and len(self.files) != n:
            raise ValueError("files must name one file per image")

    @property
    def max_boxes(self) -> int:
        """The most objects any image of the split holds."""
        return int((self.labels >= 0).sum(dim=1).max()) if len(self) else 0

    def subset(self, index: torch.Tensor) -> BoxSet:
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        files = [self.files[i] for i in index.tolist()] if self.files is not None else None
        return BoxSet(self.images[index], self.labels[index], self.classes, self.boxes[index], files)

    def targets(self, i: int) -> dict[str, torch.Tensor]:
        """Image ``i``'s objects in torchmetrics' form: ``boxes`` float K x 4, ``labels`` int64 K."""
        keep = self.labels[i] >= 0
        return {"boxes": self.boxes[i][keep], "labels": self.labels[i][keep]}


def pad_boxes(per_image: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (boxes K x 4, labels K) -> (boxes N x M x 4 zero-padded, labels N x M -1-padded), M at least 1
    so that a split without objects still has a box dimension."""
    most = max([1, *(len(labels) for _, labels in per_image)])
    boxes = torch.zeros(len(per_image), most, 4, dtype=torch.float32)
    labels = torch.full((len(per_image), most), -1, dtype=torch.int64)
    for n, (image_boxes, image_labels) in enumerate(per_image):
        boxes[n, : len(image_labels)] = image_boxes
        labels[n, : len(image_labels)] = image_labels
    return boxes, labels


def scene_boxes(scenes: SceneSet) -> BoxSet:
    """FashionScenes' boxes (int16, -1 padding; an item too dim to show has a -1 box) as a :class:`BoxSet`."""
    boxes = scenes.boxes.float()
    keep = (scenes.box_labels >= 0) & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    boxes = torch.where(keep[..., None], boxes, torch.zeros(()))
    labels = torch.where(keep, scenes.box_labels, torch.full((), -1, dtype=torch.int64))
    return BoxSet(scenes.images, labels, list(scenes.classes), boxes)


def placement(source: tuple[int, int], size: tuple[int, int], resize: str) -> tuple[float, float, float, float]:
    """Where an image of ``source`` (height, width) lands in one of ``size`` brought there by ``resize`` (as
    :func:`convscope.data.images.fit_size` does it): (x scale, y scale, x offset, y offset), so that a point of the
    source at pixel (x, y) lands at (x * sx + dx, y * sy + dy). Drawing predictions back on an input inverts it."""
    if resize not in BOX_RESIZE_MODES:
        raise UserError(f"data.resize = {resize!r} for boxes: expected one of {', '.join(BOX_RESIZE_MODES)}")
    (height, width), (target_h, target_w) = source, size
    if resize == "squash" or (height, width) == (target_h, target_w):
        return target_w / width, target_h / height, 0.0, 0.0
    scale = min(target_h / height, target_w / width)
    scaled_h = min(target_h, max(1, round(height * scale)))
    scaled_w = min(target_w, max(1, round(width * scale)))
    return scaled_w / width, scaled_h / height, float((target_w - scaled_w) // 2), float((target_h - scaled_h) // 2)


def place_boxes(boxes: torch.Tensor, source: tuple[int, int], size: tuple[int, int], resize: str) -> torch.Tensor:
    """``boxes`` (... x 4 xyxy pixels of an image of ``source``) where they land in the image of ``size``."""
    sx, sy, dx, dy = placement(source, size, resize)
    scale = torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)
    return boxes * scale + torch.tensor([dx, dy, dx, dy], dtype=boxes.dtype)


def resize_boxset(data: BoxSet, size: tuple[int, int], resize: str) -> BoxSet:
    """``data`` brought to ``size``: images by ``resize``, boxes with them (padding stays 0)."""
    if data.image_size == tuple(size):
        return data
    placement(data.image_size, size, resize)  # checks the mode before any work
    images = fit_size(data.images, tuple(size), resize)
    boxes = place_boxes(data.boxes, data.image_size, tuple(size), resize) * (data.labels >= 0)[..., None]
    return BoxSet(images, data.labels, data.classes, boxes, data.files)


@dataclass
class LabelledImage:
    """An image file and its objects, before decoding: ``boxes`` K x 4 xyxy normalised to the file's width and
    height (0..1), ``labels`` K class indices; ``size`` is the file's (height, width)."""

    path: Path
    boxes: torch.Tensor
    labels: torch.Tensor
    size: tuple[int, int]


def check_box(box: Sequence[float], where: str) -> list[float]:
    """A normalised xyxy box, checked: positive width and height, inside the image but for
    :data:`EDGE_TOLERANCE` (then clipped to it). ``where`` names the file and line for the error."""
    x0, y0, x1, y1 = box
    if not x1 > x0 or not y1 > y0:
        raise UserError(f"{where}: box has zero or negative size (width {x1 - x0:.4g}, height {y1 - y0:.4g} "
                        "of the image): expected both > 0")  # fmt: skip
    low, high = -EDGE_TOLERANCE, 1 + EDGE_TOLERANCE
    if min(x0, y0) < low or max(x1, y1) > high:
        raise UserError(f"{where}: box ({x0:.4g}, {y0:.4g}) to ({x1:.4g}, {y1:.4g}) of the image's width and height "
                        "lies outside the image: expected coordinates in 0..1")  # fmt: skip
    return [min(max(value, 0.0), 1.0) for value in (x0, y0, x1, y1)]


def decode_labelled(
    splits: dict[str, list[LabelledImage]],
    classes: list[str],
    *,
    skip_bad: bool = False,
    size: tuple[int, int] | None = None,
    resize: str = "pad",
) -> tuple[dict[str, BoxSet], list[str]]:
    """Decode every split's images to one channel count and ``size`` (by default the files' most common size,
    longer side at most 256: :func:`convscope.data.images.default_size`) and place their boxes on it.

    Returns the splits and the files left out with ``skip_bad`` (they could not be decoded); a split left without
    images is an error.
    """
    items = [item for split in splits.values() for item in split]
    if not items:
        raise UserError("the data set lists no images")
    size = tuple(size) if size else default_size([item.size for item in items])
    placement(items[0].size, size, resize)  # checks the mode before decoding
    decoded = load_images([item.path for item in items], skip_bad=skip_bad, size=size, resize=resize)
    kept = dict(zip(decoded.kept, range(len(decoded.kept)), strict=True))  # item index -> row of decoded.images
    out, start = {}, 0
    for name, split in splits.items():
        rows = [(index, kept[index]) for index in range(start, start + len(split)) if index in kept]
        start += len(split)
        if not rows:
            raise UserError(f"no image of split '{name}' could be decoded")
        per_image = []
        for index, _ in rows:
            item = items[index]
            pixels = item.boxes * torch.tensor([item.size[1], item.size[0]] * 2, dtype=torch.float32)
            per_image.append((place_boxes(pixels, item.size, size, resize), item.labels))
        boxes, labels = pad_boxes(per_image)
        images = decoded.images[torch.tensor([row for _, row in rows])]
        out[name] = BoxSet(images, labels, classes, boxes, [str(items[index].path) for index, _ in rows])
    return out, [str(path) for path in decoded.skipped]
