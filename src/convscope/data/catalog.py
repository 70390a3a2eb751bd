"""Named data sets: what the CLI and the training API open.

A spec is a built-in name (``fashion-mnist``, ``cifar10``), ``KIND:PATH``
(``mnist``, ``fashion-mnist``, ``cifar10``, ``imagefolder``, ``csv``), or a name
recorded by :func:`import_dataset` in ``<cache_root>/catalog.json``. Every open
goes through the cache: the source's files are hashed, and only a key never seen
before is decoded.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convscope.config import check_resize
from convscope.data.archive import is_archive, safe_extract
from convscope.data.base import ImageSet, Splits
from convscope.data.cache import cache_root, content_key, is_cached, load_splits, save_splits
from convscope.data.images import MAX_DEFAULT_SIDE, fit_size
from convscope.data.sources.cifar import find_cifar_files, read_cifar_python
from convscope.data.sources.csv_folder import scan_csv_folder
from convscope.data.sources.files import decode_plan, is_visible
from convscope.data.sources.idx import find_idx_files, read_idx_dir
from convscope.data.sources.imagefolder import read_imagefolder, scan_imagefolder
from convscope.errors import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FORMS = (
    "fashion-mnist, cifar10, mnist:PATH, fashion-mnist:PATH, cifar10:PATH, imagefolder:PATH, csv:PATH, "
    "or a name given to `convscope data import`"
)
_PATH_KINDS = ("mnist", "fashion-mnist", "cifar10", "imagefolder", "csv")
BOX_KINDS = ("yolo", "coco")  # data sets of boxes (convscope.data.modalities.boxes), not of labelled images
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CIFAR_DEFAULTS = ("cifar-10-python.tar.gz", "cifar-10-batches-py")
# Member names that mark a tar as CIFAR-10 python batches rather than an ImageFolder.
_CIFAR_MARKERS = frozenset({"batches.meta", "data_batch_1", "test_batch"})


@dataclass
class Dataset:
    """A decoded data set, ready for splitting and loading."""

    name: str  # the spec or imported name the user gave
    splits: Splits  # "train" and, when the source has one, "test"
    source: str  # what was read
    skipped: list[str]  # files skipped with skip_bad
    key: str  # cache key

    @property
    def classes(self) -> list[str]:
        return self.splits["train"].classes

    @property
    def channels(self) -> int:
        return self.splits["train"].channels

    @property
    def image_size(self) -> tuple[int, int]:
        return self.splits["train"].image_size


@dataclass
class _Source:
    """A resolved spec: the files its cache key covers, and how to decode it on a miss."""

    path: Path
    files: list[Path]
    base: Path  # files are keyed by their path relative to this
    options: dict[str, Any]
    decode: Callable[[bool], tuple[Splits, list[str]]]  # skip_bad -> (splits, skipped)

    def key(self) -> str:
        return content_key(self.files, self.base, self.options)


def open_dataset(
    spec: str, *, skip_bad: bool = False, size: tuple[int, int] | None = None, resize: str = "crop"
) -> Dataset:
    """Open the data set ``spec`` names, decoding it only if its content is not cached.

    ``size`` (height, width) brings every image to that size by ``resize`` (see ``convscope.config.RESIZE_MODES``);
    ``None`` keeps the source's own size (a folder: :func:`convscope.data.images.default_size`). Files are decoded
    straight to ``size`` (cached per size); tensor sources (IDX, CIFAR) are resized in memory.
    """
    check_resize(resize)
    dataset = _open(spec, _source(*_resolve(spec), size=size, resize=resize), skip_bad)
    if size is None or tuple(size) == dataset.image_size:
        return dataset
    splits = {
        name: ImageSet(fit_size(part.images, tuple(size), resize), part.labels, part.classes)
        for name, part in dataset.splits.items()
    }
    return dataclasses.replace(dataset, splits=splits)


def import_dataset(name: str, path: str, *, skip_bad: bool = False) -> Dataset:
    """Decode the data at ``path`` into the cache and record it in the catalog as ``name``."""
    if not _NAME.fullmatch(name):
        raise UserError(f"data set name '{name}' must start with a letter or digit and hold only those, '.', '_', '-'")
    location = _existing(path)
    kind = _guess_kind(location)
    dataset = _open(name, _source(kind, location), skip_bad)
    _write_catalog({**_read_catalog(), name: f"{kind}:{location}"})
    return dataset


def list_datasets() -> list[dict[str, Any]]:
    """The built-in and imported data sets: name, spec, available (its data is there), cached (decoded)."""
    imported = _read_catalog()
    builtin = {"fashion-mnist": f"fashion-mnist:{_fashion_mnist_dir()}", "cifar10": "cifar10"}
    rows = [_describe(name, spec) for name, spec in builtin.items() if name not in imported]
    return rows + [_describe(name, spec) for name, spec in sorted(imported.items())]


# What ``data info`` says of the size a run trains at, unless data.image_size sets another.
IMAGE_SIZE_RULE = (
    "the source's own size: for a folder of files their most common size, scaled down (aspect kept) so that its "
    f"longer side is at most {MAX_DEFAULT_SIDE}, the other files brought to it by data.resize (default 'crop': "
    "scaled to cover it, centre cropped); data.image_size sets another"
)


def dataset_info(spec: str) -> dict[str, Any]:
    """Splits with their counts and per-class counts, classes, channels, image size and cache key.

    Bad files are skipped rather than fatal here, and listed under "skipped": an
    inspection should report them, not stop at the first.
    """
    dataset = open_dataset(spec, skip_bad=True)
    return {
        "name": dataset.name,
        "source": dataset.source,
        "key": dataset.key,
        "classes": dataset.classes,
        "channels": dataset.channels,
        "image_size": list(dataset.image_size),
        "image_size_rule": IMAGE_SIZE_RULE,
        "splits": {
            name: {"count": len(part), "per_class": _per_class(part.labels, dataset.classes)}
            for name, part in dataset.splits.items()
        },
        "skipped": dataset.skipped,
    }


def _per_class(labels: torch.Tensor, classes: list[str]) -> dict[str, int]:
    return dict(zip(classes, torch.bincount(labels, minlength=len(classes)).tolist(), strict=True))


def _open(name: str, source: _Source, skip_bad: bool) -> Dataset:
    key = source.key()
    cached = load_splits(key)
    # An entry built with skip_bad that left files out is only good for skip_bad opens;
    # otherwise decoding again raises the exact error about the first bad file.
    if cached is not None and (skip_bad or not cached[1].get("skipped")):
        splits, meta = cached
        return Dataset(name, splits, str(source.path), meta.get("skipped", []), key)
    splits, skipped = source.decode(skip_bad)
    save_splits(key, splits, {"source": str(source.path), "skipped": skipped})
    return Dataset(name, splits, str(source.path), skipped, key)


def _resolve(spec: str) -> tuple[str, Path]:
    imported = _read_catalog()
    resolved = imported.get(spec, spec)  # an imported name stands for the KIND:PATH recorded for it
    if resolved == "fashion-mnist":
        return "fashion-mnist", _fashion_mnist_dir(required=True)
    if resolved == "cifar10":
        return "cifar10", _default_cifar10()
    kind, colon, path = resolved.partition(":")
    if colon and kind in _PATH_KINDS:
        if not path:
            raise UserError(f"data set '{spec}' needs a path after '{kind}:'")
        return kind, _existing(path)
    names = f" (imported: {', '.join(sorted(imported))})" if imported else ""
    if kind in BOX_KINDS:
        raise UserError(f"data set '{spec}' holds boxes: train task 'detect' on it (image tasks take {FORMS})")
    raise UserError(f"unknown data set '{spec}': expected {FORMS}{names}")


def _source(kind: str, path: Path, *, size: tuple[int, int] | None = None, resize: str = "crop") -> _Source:
    if kind in ("mnist", "fashion-mnist"):
        return _idx_source(path, fashion=kind == "fashion-mnist")
    if kind == "cifar10":
        return _cifar_source(path)
    # Only a size that was asked for joins the key, so the caches of the default size stay valid.
    sized = {"size": list(size), "resize": resize} if size is not None else {}
    if kind == "imagefolder" and is_archive(path):
        return _archive_source(path, size=size, resize=resize, sized=sized)
    plan = scan_imagefolder(path) if kind == "imagefolder" else scan_csv_folder(path)

    def decode(skip_bad: bool) -> tuple[Splits, list[str]]:
        return decode_plan(plan, skip_bad=skip_bad, size=size, resize=resize)

    return _Source(path, plan.files(), plan.root, {"kind": kind, **sized}, decode)


def _idx_source(path: Path, *, fashion: bool) -> _Source:
    files = [file for pair in find_idx_files(path).values() for file in pair]

    def decode(_skip_bad: bool) -> tuple[Splits, list[str]]:
        return read_idx_dir(path, fashion=fashion)

    return _Source(path, files, path, {"kind": "idx", "fashion": fashion}, decode)


def _cifar_source(path: Path) -> _Source:
    files = find_cifar_files(path)

    def decode(_skip_bad: bool) -> tuple[Splits, list[str]]:
        return read_cifar_python(path)

    return _Source(path, files, path if path.is_file() else files[0].parent, {"kind": "cifar10"}, decode)


def _archive_source(path: Path, *, size: tuple[int, int] | None, resize: str, sized: dict[str, Any]) -> _Source:
    def decode(skip_bad: bool) -> tuple[Splits, list[str]]:
        return read_imagefolder(_extract(path), skip_bad=skip_bad, size=size, resize=resize)

    # Keyed by the archive alone: once cached, it is neither extracted nor listed again.
    return _Source(path, [path], path, {"kind": "imagefolder", **sized}, decode)


def _extract(archive: Path) -> Path:
    """Extract ``archive`` under the cache root, and find the folder inside that holds the data."""
    folder = safe_extract(archive, cache_root() / "extracted" / content_key([archive], archive, {}))
    # Archives often wrap the class folders (or train/ and test/) in one top folder: step into it.
    while True:
        entries = [entry for entry in folder.iterdir() if is_visible(entry)]
        if len(entries) != 1 or not entries[0].is_dir() or not any(child.is_dir() for child in entries[0].iterdir()):
            return folder
        folder = entries[0]


def _guess_kind(path: Path) -> str:
    """What kind of source ``path`` holds, from its files' names (the catalog records it)."""
    if path.is_dir():
        if _has_idx(path):
            return "fashion-mnist" if "fashion" in path.name.lower() else "mnist"
        if (path / "batches.meta").is_file() or (path / "cifar-10-batches-py").is_dir():
            return "cifar10"
        if _has_labels_csv(path):
            return "csv"
        return "imagefolder"
    if path.suffix.lower() == ".csv":
        return "csv"
    if is_archive(path):
        return "cifar10" if _is_cifar_archive(path) else "imagefolder"
    raise UserError(f"cannot tell what data '{path}' holds: expected a folder, a .csv file or a tar/zip archive")


def _has_idx(path: Path) -> bool:
    try:
        find_idx_files(path)
    except UserError:
        return False
    return True


def _has_labels_csv(folder: Path) -> bool:
    # Only a CSV with the id and label columns makes a folder a CSV layout: an image
    # folder may well carry some other CSV beside its class folders.
    tables = [child for child in folder.glob("*.csv") if is_visible(child)]
    if len(tables) != 1:
        return False
    try:
        with tables[0].open(newline="", encoding="utf-8-sig") as stream:
            header = next(csv.reader(stream), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return {"id", "label"} <= {column.strip() for column in header}


def _is_cifar_archive(path: Path) -> bool:
    if not path.name.lower().endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2")):
        return False
    # The batches sit among the first few members; a look there avoids decompressing the whole archive.
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in itertools.islice(tar, 16):
                if Path(member.name).name in _CIFAR_MARKERS:
                    return True
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"cannot read archive '{path}': {exc}") from None
    return False


def _existing(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise UserError(f"data path '{text}' does not exist")
    return path.resolve()


def _fashion_mnist_dir(*, required: bool = False) -> Path:
    folder = Path(os.environ.get("CONVSCOPE_FASHION_MNIST") or FASHION_MNIST_DIR)
    if required and not _has_idx(folder):
        raise UserError(
            f"Fashion-MNIST is not in '{folder}': run `apt-get install dataset-fashion-mnist` "
            "(or set CONVSCOPE_FASHION_MNIST to a folder holding its IDX files)"
        )
    return folder


def _default_cifar10() -> Path:
    data = cache_root() / "data"
    for name in _CIFAR_DEFAULTS:
        if (data / name).exists():
            return data / name
    raise UserError(
        "CIFAR-10 is not imported: run `convscope data import cifar10 PATH` with PATH the "
        f"cifar-10-python.tar.gz archive or a CIFAR-10 image folder (or put the archive in '{data}')"
    )


def _describe(name: str, spec: str) -> dict[str, Any]:
    try:
        key = _source(*_resolve(spec)).key()
    except UserError:
        return {"name": name, "spec": spec, "available": False, "cached": False}
    return {"name": name, "spec": spec, "available": True, "cached": is_cached(key)}


def _catalog_file() -> Path:
    return cache_root() / "catalog.json"


def _read_catalog() -> dict[str, str]:
    file = _catalog_file()
    if not file.is_file():
        return {}
    try:
        catalog = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read catalog '{file}': {exc}; fix or delete it") from None
    if not isinstance(catalog, dict) or not all(isinstance(spec, str) for spec in catalog.values()):
        raise UserError(f"catalog '{file}' must map names to specs; fix or delete it")
    return catalog


def _write_catalog(catalog: dict[str, str]) -> None:
    file = _catalog_file()
    file.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the catalog and renamed over it, so a reader never sees half a file.
    with tempfile.NamedTemporaryFile("w", dir=file.parent, prefix=".catalog-", suffix=".json", delete=False) as out:
        json.dump(catalog, out, indent=2, sort_keys=True)
    os.replace(out.name, file)
