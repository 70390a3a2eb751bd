"""Labelled texts from their sources: seed 004's Spanish first names, and any CSV of texts and labels.

Every source is prepared as in seed 004: whitespace runs become ``_`` (``maria carmen`` ->
``maria_carmen``), optionally lower case; repeated (text, label) pairs are merged. A text found under
several labels keeps the label with the larger total weight (the INE frequency for the names, the
number of rows for a CSV), so that it is learned as most people who carry it are; texts whose weights
tie are dropped, since no label is right for them. The counts are reported in ``TextSet.report``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convscope.errors import UserError

SPANISH_NAMES = "spanish-names"
TEXT_CSV = "textcsv"
FORMS = f"{SPANISH_NAMES} or {TEXT_CSV}:PATH"
# Beside the checkout, as the Makefile finds ../shared/datasets; $CONVSCOPE_SPANISH_NAMES overrides it.
SPANISH_NAMES_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "spanish-names"
# Male first, as seed 004 concatenates them: the order of the texts fixes which ones the split draws.
SPANISH_NAMES_FILES = {"male": "male_names.csv", "female": "female_names.csv"}


@dataclass
class LabelledText:
    text: str  # normalised
    label: str
    weight: float  # how many people (or rows) it stands for


@dataclass
class TextSet:
    """Unique normalised texts, one label each (an index into ``classes``)."""

    name: str  # the spec the user gave
    texts: list[str]
    labels: list[int]
    classes: list[str]
    report: dict[str, Any] = field(default_factory=dict)  # rows read, duplicates, conflicts, skipped rows


def normalise(text: str, *, lowercase: bool) -> str:
    """Seed 004's preparation: whitespace runs to ``_`` (ends stripped), then lower case if asked."""
    joined = "_".join(text.split())
    return joined.lower() if lowercase else joined


def open_texts(spec: str, *, text_column: str, label_column: str, lowercase: bool, skip_bad: bool = False) -> TextSet:
    """Read the labelled texts ``spec`` names: ``spanish-names`` or ``textcsv:PATH``."""
    skipped: list[str] = []
    if spec == SPANISH_NAMES:
        rows = list(read_spanish_names(spanish_names_dir(), lowercase=lowercase))
        weighting = "INE frequency"
    elif spec.startswith(f"{TEXT_CSV}:") and spec != f"{TEXT_CSV}:":
        path = Path(spec.removeprefix(f"{TEXT_CSV}:")).expanduser()
        rows = list(
            read_text_csv(path, text_column, label_column, lowercase=lowercase, skipped=skipped if skip_bad else None)
        )
        weighting = "number of rows"
    else:
        raise UserError(f"unknown text data set {spec!r}; expected {FORMS}")
    texts, labels, report = merge_labels(rows)
    classes = sorted(set(labels))
    if len(classes) < 2:
        column = "the names" if spec == SPANISH_NAMES else f"label column {label_column!r} of {spec!r}"
        found = repr(classes[0]) if classes else "none"
        raise UserError(f"{column} has a single class ({found}): a classifier needs at least two")
    index = {name: i for i, name in enumerate(classes)}
    report.update({"label_weight": weighting, "skipped_rows": skipped})
    return TextSet(spec, texts, [index[label] for label in labels], classes, report)


def spanish_names_dir() -> Path:
    folder = Path(os.environ.get("CONVSCOPE_SPANISH_NAMES") or SPANISH_NAMES_DIR)
    missing = [name for name in SPANISH_NAMES_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"data set {SPANISH_NAMES!r} not found: '{folder}' lacks {', '.join(missing)}; "
            "set $CONVSCOPE_SPANISH_NAMES to the folder holding male_names.csv and female_names.csv"
        )
    return folder


def read_spanish_names(folder: Path, *, lowercase: bool) -> Iterator[LabelledText]:
    """The INE files (``name,frequency,mean_age``), labelled by the file they come from."""
    for label, filename in SPANISH_NAMES_FILES.items():
        path = folder / filename
        for line, row in _csv_rows(path, ("name", "frequency")):
            text = normalise(row["name"] or "", lowercase=lowercase)
            try:
                frequency = float(row["frequency"] or "")
            except ValueError:
                raise UserError(f"'{path}' line {line}: frequency {row['frequency']!r} is not a number") from None
            if not text:
                raise UserError(f"'{path}' line {line}: empty name")
            yield LabelledText(text, label, frequency)


def read_text_csv(
    path: Path, text_column: str, label_column: str, *, lowercase: bool, skipped: list[str] | None = None
) -> Iterator[LabelledText]:
    """Rows of a CSV with a header naming ``text_column`` and ``label_column``, one row = weight 1.

    A row with an empty text or label is an error, or is appended to ``skipped`` (``FILE:LINE``) when given.
    """
    columns = {"data.text_column": text_column, "data.label_column": label_column}
    for line, row in _csv_rows(path, tuple(columns.values()), fields=tuple(columns)):
        text = normalise(row[text_column] or "", lowercase=lowercase)
        label = (row[label_column] or "").strip()
        if text and label:
            yield LabelledText(text, label, 1.0)
        elif skipped is not None:
            skipped.append(f"{path.name}:{line}")
        else:
            empty = f"text ({text_column!r})" if not text else f"label ({label_column!r})"
            raise UserError(f"'{path}' line {line}: empty {empty}; fix the row or pass --skip-bad to skip such rows")


def merge_labels(rows: Iterable[LabelledText]) -> tuple[list[str], list[str], dict[str, Any]]:
    """Unique texts in first-seen order, each with the label of largest total weight; ties dropped."""
    weights: dict[str, dict[str, float]] = {}
    count = 0
    for row in rows:
        count += 1
        per_label = weights.setdefault(row.text, {})
        per_label[row.label] = per_label.get(row.label, 0.0) + row.weight
    texts, labels = [], []
    several = ties = 0
    for text, per_label in weights.items():
        if len(per_label) > 1:
            several += 1
            first, second = sorted(per_label.values(), reverse=True)[:2]
            if first == second:
                ties += 1
                continue
        texts.append(text)
        labels.append(max(per_label, key=per_label.__getitem__))
    report = {
        "rows": count,
        "duplicates": count - sum(len(per_label) for per_label in weights.values()),
        "in_several_classes": several,
        "kept_with_majority_label": several - ties,
        "dropped_as_ties": ties,
    }
    return texts, labels, report


def _csv_rows(path: Path, required: tuple[str, ...], fields: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a UTF-8 CSV whose header has the ``required`` columns (named by ``fields``)."""
    if not path.is_file():
        raise UserError(f"text CSV '{path}' does not exist")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            for i, column in enumerate(required):
                if column not in header:
                    what = f" ({fields[i]})" if fields else ""
                    raise UserError(
                        f"'{path}' has no column {column!r}{what}; its header has: {', '.join(header) or 'nothing'}"
                    )
            for row in reader:
                yield reader.line_num, row
    except UnicodeDecodeError:
        raise UserError(f"'{path}' is not UTF-8 text") from None
    except csv.Error as exc:
        raise UserError(f"'{path}' is not a readable CSV: {exc}") from None
