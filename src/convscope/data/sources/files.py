"""What the folder sources share: image files listed with their labels (a plan), then decoded together.

A ``scan_*`` function lists the files a source depends on without decoding anything (what the cache hashes to
decide whether a source was decoded before); :func:`decode_plan` decodes them.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from convscope.data.base import ImageSet, Splits
from convscope.data.images import SUPPORTED_EXTENSIONS, load_images
from convscope.errors import UserError


@dataclass
class FolderPlan:
    """Image files with their labels, listed before anything is decoded."""

    root: Path
    classes: list[str]
    items: dict[str, list[tuple[Path, int]]]  # split -> (image file, label)
    label_files: list[Path] = field(default_factory=list)  # where labels come from besides folder names (a CSV)
    missing: list[str] = field(default_factory=list)  # CSV rows whose image is not there

    def files(self) -> list[Path]:
        """Every file the decoded data depends on."""
        return [*self.label_files, *(path for items in self.items.values() for path, _ in items)]


def decode_plan(
    plan: FolderPlan, *, skip_bad: bool = False, size: tuple[int, int] | None = None, resize: str = "crop"
) -> tuple[Splits, list[str]]:
    """Decode every split of ``plan`` together, so all share one channel count and size."""
    if plan.missing and not skip_bad:
        raise UserError(f"{plan.missing[0]} (looked beside the CSV and in train/)")
    paths = [path for items in plan.items.values() for path, _ in items]
    labels = [label for items in plan.items.values() for _, label in items]
    if not paths:
        raise UserError(f"'{plan.root}' has no image to decode")
    decoded = load_images(paths, skip_bad=skip_bad, size=size, resize=resize)
    splits = {}
    start = 0
    for split, items in plan.items.items():
        # kept is sorted, so this split's images are one contiguous run of the decoded tensor.
        low, high = bisect.bisect_left(decoded.kept, start), bisect.bisect_left(decoded.kept, start + len(items))
        if low == high:
            raise UserError(f"no image of split '{split}' in '{plan.root}' could be decoded")
        split_labels = torch.tensor([labels[index] for index in decoded.kept[low:high]], dtype=torch.int64)
        splits[split] = ImageSet(decoded.images[low:high], split_labels, plan.classes)
        start += len(items)
    return splits, [str(path) for path in decoded.skipped] + plan.missing


def is_visible(entry: os.DirEntry[str] | Path) -> bool:
    """False for hidden files and the resource forks macOS puts in zips ("._x.jpg", "__MACOSX/")."""
    return not entry.name.startswith(".") and entry.name != "__MACOSX"


def subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(Path(entry.path) for entry in os.scandir(folder) if entry.is_dir() and is_visible(entry))


def is_image_name(name: str) -> bool:
    return is_visible(Path(name)) and Path(name).suffix.lower() in SUPPORTED_EXTENSIONS
