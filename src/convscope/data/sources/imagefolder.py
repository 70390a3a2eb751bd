"""The ImageFolder source (``imagefolder:PATH``, torchvision's layout): one folder of images per class, or
``train/`` and ``test/`` (``val/``, ``valid/``) folders of them."""

from __future__ import annotations

import os
from pathlib import Path

from convscope.data.base import Splits
from convscope.data.images import SUPPORTED_EXTENSIONS
from convscope.data.sources.files import FolderPlan, decode_plan, is_image_name, is_visible, subfolders
from convscope.errors import UserError

# Splits of an ImageFolder layout: "train" and the first of these found beside it.
_TEST_FOLDER_NAMES = ("test", "val", "valid")


def scan_imagefolder(path: Path) -> FolderPlan:
    """List an ImageFolder layout: class folders, or ``train/`` and ``test/`` (``val/``, ``valid/``) of them."""
    if not path.is_dir():
        raise UserError(f"'{path}' is not a folder")
    layout = _split_folders(path)
    classes = [folder.name for folder in _class_folders(layout["train"])]
    label_of = {name: label for label, name in enumerate(classes)}
    items = {}
    for split, split_folder in layout.items():
        items[split] = []
        for class_folder in _class_folders(split_folder):
            if class_folder.name not in label_of:
                raise UserError(f"class folder '{class_folder}' has no counterpart in '{layout['train']}'")
            label = label_of[class_folder.name]
            items[split] += [(image, label) for image in _image_files(class_folder)]
    return FolderPlan(path, classes, items)


def read_imagefolder(
    path: Path, *, skip_bad: bool = False, size: tuple[int, int] | None = None, resize: str = "crop"
) -> tuple[Splits, list[str]]:
    """Decode an ImageFolder layout (see :func:`scan_imagefolder`)."""
    return decode_plan(scan_imagefolder(path), skip_bad=skip_bad, size=size, resize=resize)


def _split_folders(path: Path) -> dict[str, Path]:
    by_name = {folder.name.lower(): folder for folder in subfolders(path)}
    train = by_name.get("train")
    if train is None or not subfolders(train):
        return {"train": path}
    layout = {"train": train}
    for name in _TEST_FOLDER_NAMES:
        if name in by_name and subfolders(by_name[name]):
            layout["test"] = by_name[name]
            break
    return layout


def _class_folders(folder: Path) -> list[Path]:
    folders = subfolders(folder)
    if not folders:
        raise UserError(f"'{folder}' has no class folders: expected one folder of images per class")
    return folders


def _image_files(folder: Path) -> list[Path]:
    files = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [name for name in dirs if is_visible(Path(name))]
        files += [Path(parent, name) for name in names if is_image_name(name)]
    if not files:
        raise UserError(f"class folder '{folder}' holds no images ({', '.join(sorted(SUPPORTED_EXTENSIONS))})")
    return sorted(files)
