"""Ultralytics' YOLO layout: a ``data.yaml`` naming the classes and the splits, ``images/<split>/`` and beside them
``labels/<split>/`` with one ``<name>.txt`` per image, a line ``class cx cy w h`` per object (centre, width and
height normalised to the image's width and height).

``yolo:PATH`` is the yaml, or a folder holding ``data.yaml`` (or exactly one ``.yaml``). As Ultralytics reads it:
``names`` is a list or an ``{id: name}`` map (ids 0..n-1); ``train``, ``val`` and ``test`` are image folders or
``.txt`` lists of image files, each a path or a list of them, relative to ``path:`` (itself relative to the yaml's
folder) or to the yaml's folder; an image's labels are at its path with the last ``images`` folder replaced by
``labels`` and the extension by ``.txt``. A line with more than five fields is a segmentation polygon
(``class x1 y1 x2 y2 ...``): its bounding box is the object's box. An empty label file is an image without objects.

Unlike Ultralytics, which reads a missing label file as an image without objects, a missing label file is an
error (a misplaced labels folder would otherwise train a detector on images that seem empty); ``skip_bad`` skips
the image and lists it, as it does for every other bad image or label line.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from convscope.data.boxes import BoxSet, LabelledImage, check_box, decode_labelled
from convscope.data.images import SUPPORTED_EXTENSIONS, probe_image
from convscope.data.sources.files import is_visible
from convscope.errors import UserError

SPLITS = ("train", "val", "test")
YAML_NAME = "data.yaml"


def find_yaml(path: Path) -> Path:
    """The data.yaml ``path`` names: the file itself, or the one yaml in the folder ``path``."""
    if path.is_file():
        if path.suffix.lower() not in (".yaml", ".yml"):
            raise UserError(f"'{path}' is not a YOLO data.yaml: expected a .yaml file or a folder holding one")
        return path
    if (path / YAML_NAME).is_file():
        return path / YAML_NAME
    found = sorted(child for child in path.glob("*.y*ml") if is_visible(child))
    if len(found) != 1:
        names = ", ".join(child.name for child in found) or "none"
        raise UserError(f"'{path}' needs a data.yaml naming the classes (names:) and the splits (train:, val:) "
                        f"to be read as a YOLO data set; found {names}")  # fmt: skip
    return found[0]


def read_yolo(
    path: Path, *, skip_bad: bool = False, size: tuple[int, int] | None = None, resize: str = "pad"
) -> tuple[dict[str, BoxSet], list[str]]:
    """The splits (``train`` and, when the yaml names them, ``val`` and ``test``) and what ``skip_bad`` left out."""
    classes, splits, skipped = scan_yolo(path, skip_bad=skip_bad)
    decoded, undecodable = decode_labelled(splits, classes, skip_bad=skip_bad, size=size, resize=resize)
    return decoded, skipped + undecodable


def scan_yolo(path: Path, *, skip_bad: bool = False) -> tuple[list[str], dict[str, list[LabelledImage]], list[str]]:
    """Classes, the labelled images of each split (nothing decoded yet) and the images skipped as bad."""
    config_file = find_yaml(path)
    config = _load_yaml(config_file)
    classes = _names(config, config_file)
    root = config_file.parent / str(config.get("path") or ".")
    if "train" not in config:
        raise UserError(f"'{config_file}' has no 'train:' entry: expected the training images' folder or list")
    splits: dict[str, list[LabelledImage]] = {}
    skipped: list[str] = []
    for split in SPLITS:
        if not config.get(split):
            continue
        images = _split_images(config[split], root, config_file, split)
        splits[split] = []
        for image in images:
            try:
                splits[split].append(_labelled_image(image, len(classes)))
            except UserError as exc:
                if not skip_bad:
                    raise
                skipped.append(str(exc))
    return classes, splits, skipped


def label_path(image: Path) -> Path:
    """Where Ultralytics looks for ``image``'s labels: the last ``images`` folder of its path becomes ``labels``."""
    marker, replacement = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    text = replacement.join(str(image).rsplit(marker, 1))
    return Path(text).with_suffix(".txt")


def _load_yaml(file: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read '{file}': {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"'{file}'{where}: malformed YAML: {problem}") from None
    if not isinstance(config, dict):
        raise UserError(f"'{file}' holds a {type(config).__name__}: expected a YAML mapping with names:, train:, val:")
    return config


def _names(config: dict[str, Any], file: Path) -> list[str]:
    names = config.get("names")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise UserError(f"'{file}': names has ids {sorted(names, key=str)}: expected the ids 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise UserError(f"'{file}': names must be a list of class names or a map {{0: name, ...}}; found {names!r}")
    classes = [str(name) for name in names]
    if "nc" in config and config["nc"] != len(classes):
        raise UserError(f"'{file}': nc = {config['nc']!r} but names lists {len(classes)} classes")
    if len(set(classes)) != len(classes):
        raise UserError(f"'{file}': names lists a class twice: {classes}")
    return classes


def _split_images(entry: Any, root: Path, file: Path, split: str) -> list[Path]:
    images: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        place = root / str(item)
        if place.is_dir():
            images += sorted(
                Path(folder, name)
                for folder, dirs, names in os.walk(place)
                for name in names
                if is_visible(Path(name)) and Path(name).suffix.lower() in SUPPORTED_EXTENSIONS
            )
        elif place.is_file() and place.suffix.lower() == ".txt":
            images += _listed_images(place)
        else:
            raise UserError(f"'{file}': {split}: '{item}' is neither a folder of images nor a .txt list of them "
                            f"(looked for '{place}')")  # fmt: skip
    if not images:
        raise UserError(f"'{file}': {split}: '{entry}' holds no images")
    return images


def _listed_images(listing: Path) -> list[Path]:
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read '{listing}': {exc}") from None
    # A relative entry is relative to the list's folder (Ultralytics: "./" entries).
    return [listing.parent / line.strip() for line in lines if line.strip()]


def _labelled_image(image: Path, num_classes: int) -> LabelledImage:
    if not image.is_file():
        raise UserError(f"image '{image}' does not exist")
    size = probe_image(image).size
    labels_file = label_path(image)
    if not labels_file.is_file():
        raise UserError(f"image '{image}' has no label file '{labels_file}' (an image without objects has an "
                        "empty one)")  # fmt: skip
    try:
        lines = labels_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read label file '{labels_file}': {exc}") from None
    boxes, labels = [], []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            label, box = _parse_line(line, f"'{labels_file}' line {number}", num_classes)
            boxes.append(box)
            labels.append(label)
    return LabelledImage(image, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                         torch.tensor(labels, dtype=torch.int64), size)  # fmt: skip


def _parse_line(line: str, where: str, num_classes: int) -> tuple[int, list[float]]:
    fields = line.split()
    expected = "expected 'class cx cy w h' (or a polygon 'class x1 y1 x2 y2 x3 y3 ...')"
    if len(fields) < 5 or (len(fields) > 5 and len(fields) % 2 == 0):
        raise UserError(f"{where}: {len(fields)} fields: {expected}")
    try:
        numbers = [float(field) for field in fields]
    except ValueError:
        raise UserError(f"{where}: {line.strip()!r} is not all numbers: {expected}") from None
    if not all(math.isfinite(value) for value in numbers):
        raise UserError(f"{where}: {line.strip()!r} holds a non-finite number: {expected}")
    label = numbers[0]
    if label != int(label) or not 0 <= label < num_classes:
        raise UserError(f"{where}: class id {fields[0]} is out of range: the yaml names {num_classes} classes "
                        f"(ids 0..{num_classes - 1})")  # fmt: skip
    if len(fields) == 5:
        cx, cy, w, h = numbers[1:]
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    else:
        xs, ys = numbers[1::2], numbers[2::2]
        box = [min(xs), min(ys), max(xs), max(ys)]
    return int(label), check_box(box, where)


def write_yolo(splits: dict[str, BoxSet], folder: Path) -> Path:
    """Write ``splits`` (``train``, ``val`` or ``valid``, ``test``) in Ultralytics' layout under ``folder``: PNG
    images, label files and a data.yaml (no ``path:``: Ultralytics then reads the splits beside the yaml, wherever
    the folder moves). Returns the yaml's path."""
    if not splits:
        raise ValueError("write_yolo needs at least one split")
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {}
    for name, data in splits.items():
        split = "val" if name == "valid" else name
        if split not in SPLITS:
            raise ValueError(f"split {name!r}: expected one of train, val, valid, test")
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
        height, width = data.image_size
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        pixels = data.images.permute(0, 2, 3, 1).numpy()
        for i in range(len(data)):
            stem = f"{i:06d}"
            image = pixels[i, :, :, 0] if data.channels == 1 else pixels[i]
            Image.fromarray(np.ascontiguousarray(image)).save(folder / "images" / split / f"{stem}.png")
            target = data.targets(i)
            xyxy = target["boxes"] / scale
            centre, extent = (xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]
            rows = zip(target["labels"].tolist(), centre.tolist(), extent.tolist(), strict=True)
            lines = "".join(f"{label} {c[0]:.6f} {c[1]:.6f} {e[0]:.6f} {e[1]:.6f}\n" for label, c, e in rows)
            (folder / "labels" / split / f"{stem}.txt").write_text(lines)
        config[split] = f"images/{split}"
    classes = next(iter(splits.values())).classes
    config = {**config, "nc": len(classes), "names": list(classes)}
    file = folder / YAML_NAME
    file.write_text(yaml.safe_dump(config, sort_keys=False))
    return file
