"""The CSV-labelled folder source (``csv:PATH``): a CSV of ``id,label`` rows and the images beside it."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from convscope.console import note
from convscope.data.base import Splits
from convscope.data.sources.files import FolderPlan, decode_plan, is_image_name, is_visible
from convscope.errors import UserError


def scan_csv_folder(path: Path) -> FolderPlan:
    """List a CSV-labelled folder: a CSV with ``id,label`` and ``<id>.<ext>`` beside it or in ``train/``."""
    csv_path = _find_csv(path)
    index = _image_index([csv_path.parent, csv_path.parent / "train"])
    rows: list[tuple[Path, str]] = []
    labels: set[str] = set()
    missing = []
    seen: dict[str, tuple[str, int]] = {}  # id -> (its label, the line that gave it)
    repeated: list[str] = []  # "id 'x' on lines 2 and 9": the same image twice under the same label
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            columns = [name.strip() for name in reader.fieldnames or []]
            if "id" not in columns or "label" not in columns:
                raise UserError(f"'{csv_path}' needs columns 'id' and 'label'; found {', '.join(columns) or 'none'}")
            reader.fieldnames = columns
            for row in reader:
                ident, label = (row["id"] or "").strip(), (row["label"] or "").strip()
                if not ident or not label:
                    raise UserError(f"'{csv_path}' line {reader.line_num}: empty id or label")
                if ident in seen:
                    first_label, first_line = seen[ident]
                    if first_label != label:
                        raise UserError(
                            f"'{csv_path}' line {reader.line_num}: id '{ident}' is labelled '{label}', but line "
                            f"{first_line} labels it '{first_label}': one image cannot be both; keep one of the rows"
                        )
                    repeated.append(f"id '{ident}' on lines {first_line} and {reader.line_num}")
                    continue  # the image once: twice would weigh it double and could put it in two splits
                seen[ident] = (label, reader.line_num)
                labels.add(label)
                if ident in index:
                    rows.append((index[ident], label))
                else:
                    missing.append(f"{csv_path} line {reader.line_num}: no image for id '{ident}'")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read CSV '{csv_path}': {exc}") from None
    if not labels:
        raise UserError(f"'{csv_path}' has no rows")
    if repeated:
        note(f"'{csv_path}': {len(repeated)} id(s) listed twice with the same label ({', '.join(repeated[:3])}"
             f"{', ...' if len(repeated) > 3 else ''}); each image is used once")  # fmt: skip
    classes = _sorted_labels(labels)
    label_of = {name: label for label, name in enumerate(classes)}
    items = {"train": [(image, label_of[label]) for image, label in rows]}
    return FolderPlan(csv_path.parent, classes, items, label_files=[csv_path], missing=missing)


def read_csv_folder(
    path: Path, *, skip_bad: bool = False, size: tuple[int, int] | None = None, resize: str = "crop"
) -> tuple[Splits, list[str]]:
    """Decode a CSV-labelled folder (see :func:`scan_csv_folder`)."""
    return decode_plan(scan_csv_folder(path), skip_bad=skip_bad, size=size, resize=resize)


def _find_csv(path: Path) -> Path:
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(f"'{path}' is not a CSV file")
        return path
    if not path.is_dir():
        raise UserError(f"'{path}' is neither a CSV file nor a folder")
    found = sorted(child for child in path.iterdir() if child.suffix.lower() == ".csv" and is_visible(child))
    if len(found) != 1:
        names = ", ".join(child.name for child in found) or "none"
        raise UserError(f"'{path}' must hold exactly one CSV file of labels; found {names}")
    return found[0]


def _image_index(folders: list[Path]) -> dict[str, Path]:
    """Image file by id (its name without extension, or with it); the first folder listed wins."""
    index: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for name in sorted(entry.name for entry in os.scandir(folder) if entry.is_file()):
            if is_image_name(name):
                index.setdefault(Path(name).stem, folder / name)
                index.setdefault(name, folder / name)
    return index


def _sorted_labels(labels: set[str]) -> list[str]:
    # Numeric labels sort by value so that label "2" gets index 2, not the index after "10".
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)
