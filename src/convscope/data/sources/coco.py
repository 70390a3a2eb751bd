"""COCO instances JSON: ``images`` (``id``, ``file_name``), ``annotations`` (``image_id``, ``category_id``,
``bbox`` = [x, y, width, height] in pixels) and ``categories`` (``id``, ``name``).

``coco:PATH`` is one JSON (the training split) or a folder of them, each named for its split (``train``, ``val``,
``test`` in the name, as ``instances_train2017.json``; a lone JSON is the training split). An image's file is looked
for beside the JSON, in ``images/`` beside it, in ``images/`` one folder up, and in the folder one up named after the
JSON (``annotations/instances_val2017.json`` -> ``val2017/``), as COCO lays it out. The classes are the categories
in the order of their ids. Crowd annotations (``iscrowd`` = 1) mark a region of many objects that COCO's own
evaluation ignores; they are not objects to find, and are left out. An image without annotations has no objects.

Bad input (malformed JSON, an entry without its fields, an unknown image or category id, a box of zero or negative
size or outside its image, a missing image file) is an error naming the JSON and the element (``annotations[12]``);
``skip_bad`` skips the image it belongs to and lists it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from convscope.data.boxes import BoxSet, LabelledImage, check_box, decode_labelled
from convscope.data.images import probe_image
from convscope.data.sources.files import is_visible
from convscope.errors import UserError

SPLITS = ("train", "val", "test")


def find_json_files(path: Path) -> dict[str, Path]:
    """Split -> its instances JSON: ``path`` itself (train), or the JSONs of the folder ``path`` by name."""
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise UserError(f"'{path}' is not a COCO instances .json file")
        return {"train": path}
    files = sorted(child for child in path.rglob("*.json") if is_visible(child))
    if len(files) == 1:
        return {"train": files[0]}
    found: dict[str, Path] = {}
    for file in files:
        split = next((name for name in SPLITS if name in file.stem.lower()), None)
        if split is None:
            continue
        if split in found:
            raise UserError(f"'{path}' holds two {split} JSONs, '{found[split]}' and '{file}': give one as coco:FILE")
        found[split] = file
    if "train" not in found:
        names = ", ".join(file.name for file in files) or "none"
        raise UserError(f"'{path}' has no COCO JSON named for the train split (found {names}): give one as coco:FILE")
    return found


def read_coco(
    path: Path, *, skip_bad: bool = False, size: tuple[int, int] | None = None, resize: str = "pad"
) -> tuple[dict[str, BoxSet], list[str]]:
    """The splits (``train`` and any ``val``, ``test``) and what ``skip_bad`` left out."""
    classes, splits, skipped = scan_coco(path, skip_bad=skip_bad)
    decoded, undecodable = decode_labelled(splits, classes, skip_bad=skip_bad, size=size, resize=resize)
    return decoded, skipped + undecodable


def scan_coco(path: Path, *, skip_bad: bool = False) -> tuple[list[str], dict[str, list[LabelledImage]], list[str]]:
    """Classes, the labelled images of each split (nothing decoded yet) and what was skipped as bad."""
    classes: list[str] | None = None
    splits: dict[str, list[LabelledImage]] = {}
    skipped: list[str] = []
    for split, file in find_json_files(path).items():
        document = _load_json(file)
        split_classes, category_label = _categories(document, file)
        if classes is not None and split_classes != classes:
            raise UserError(f"'{file}' has categories {split_classes}, another split {classes}: expected the same")
        classes = split_classes
        splits[split] = _images(document, file, category_label, skip_bad, skipped)
        if not splits[split]:
            raise UserError(f"'{file}' lists no usable image")
    assert classes is not None  # find_json_files gives at least the train split
    return classes, splits, skipped


def _load_json(file: Path) -> dict[str, Any]:
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read '{file}': {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"'{file}' line {exc.lineno} column {exc.colno}: malformed JSON: {exc.msg}") from None
    if not isinstance(document, dict):
        raise UserError(f"'{file}' holds a JSON {type(document).__name__}: expected an object with images, "
                        "annotations and categories")  # fmt: skip
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            raise UserError(f"'{file}' has no '{key}' list: expected a COCO instances JSON")
    return document


def _field(entry: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise UserError(f"{where}: no '{key}': expected an object with it")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(f"{where}: '{key}' is {value!r}: expected a {getattr(kind, '__name__', 'value')}")
    return value


def _categories(document: dict[str, Any], file: Path) -> tuple[list[str], dict[int, int]]:
    named = {}
    for i, entry in enumerate(document["categories"]):
        where = f"'{file}' categories[{i}]"
        ident = _field(entry, "id", int, where)
        if ident in named:
            raise UserError(f"{where}: category id {ident} is given twice")
        named[ident] = str(_field(entry, "name", str, where))
    if not named:
        raise UserError(f"'{file}' has no categories: expected at least one class")
    ids = sorted(named)
    return [named[ident] for ident in ids], {ident: label for label, ident in enumerate(ids)}


def _images(
    document: dict[str, Any], file: Path, category_label: dict[int, int], skip_bad: bool, skipped: list[str]
) -> list[LabelledImage]:
    def bad(error: UserError) -> None:
        if not skip_bad:
            raise error
        skipped.append(str(error))

    entries: dict[int, tuple[int, Path]] = {}  # image id -> (its index in images, its file)
    for i, entry in enumerate(document["images"]):
        where = f"'{file}' images[{i}]"
        try:
            ident, name = _field(entry, "id", int, where), _field(entry, "file_name", str, where)
            if ident in entries:
                raise UserError(f"{where}: image id {ident} is given twice")
        except UserError as error:
            bad(error)
            continue
        entries[ident] = (i, _locate(file, name))
    annotations: dict[int, list[tuple[int, dict[str, Any]]]] = {ident: [] for ident in entries}
    for j, entry in enumerate(document["annotations"]):
        try:
            image_id = _field(entry, "image_id", int, f"'{file}' annotations[{j}]")
            if image_id not in entries:
                raise UserError(f"'{file}' annotations[{j}]: image_id {image_id} is not in images")
        except UserError as error:
            bad(error)
            continue
        annotations[image_id].append((j, entry))
    out = []
    for ident, (i, image) in entries.items():
        try:
            out.append(_labelled_image(file, i, image, annotations[ident], category_label))
        except UserError as error:
            bad(error)
    return out


def _locate(file: Path, name: str) -> Path:
    """Where ``name`` is: beside the JSON, in images/ beside it or one up, or in the folder one up named after it
    (its stem after ``instances_``); the first place when it is in none (the error names it)."""
    stem = file.stem.removeprefix("instances_")
    folders = [file.parent, file.parent / "images", file.parent.parent / "images", file.parent.parent / stem]
    return next((folder / name for folder in folders if (folder / name).is_file()), file.parent / name)


def _labelled_image(
    file: Path, i: int, image: Path, annotations: list[tuple[int, dict[str, Any]]], category_label: dict[int, int]
) -> LabelledImage:
    if not image.is_file():
        raise UserError(f"'{file}' images[{i}]: image '{image.name}' not found beside the JSON nor in images/")
    height, width = probe_image(image).size
    boxes, labels = [], []
    for j, entry in annotations:
        where = f"'{file}' annotations[{j}]"
        if entry.get("iscrowd"):
            continue
        category = _field(entry, "category_id", int, where)
        if category not in category_label:
            raise UserError(f"{where}: category_id {category} is not among the categories' ids "
                            f"{sorted(category_label)}")  # fmt: skip
        bbox = entry.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(value) for value in bbox):
            raise UserError(f"{where}: bbox is {bbox!r}: expected [x, y, width, height], four finite numbers")
        x, y, w, h = bbox
        box = [x / width, y / height, (x + w) / width, (y + h) / height]
        boxes.append(check_box(box, f"{where} in '{image.name}' ({width}x{height})"))
        labels.append(category_label[category])
    return LabelledImage(image, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                         torch.tensor(labels, dtype=torch.int64), (height, width))  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
