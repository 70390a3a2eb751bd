"""Readers for each on-disk layout: IDX, ImageFolder, CIFAR-10 python batches, CSV-labelled folder.

Every reader returns ``(splits, skipped)``: the decoded splits and the files (or
CSV rows) left out with ``skip_bad``. The ``find_*``/``scan_*`` functions list
the files a reader depends on without decoding anything, which is what the cache
hashes to decide whether a source was decoded before.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import math
import os
import pickle
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from convscope.console import note
from convscope.data.base import ImageSet, Splits
from convscope.data.images import SUPPORTED_EXTENSIONS, load_images
from convscope.errors import UserError

try:
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# Splits of an ImageFolder layout: "train" and the first of these found beside it.
_TEST_FOLDER_NAMES = ("test", "val", "valid")

# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

_IDX_STEMS = {"train": ("train-images", "train-labels"), "test": ("t10k-images", "t10k-labels")}
_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the third byte of the magic number


def find_idx_files(path: Path) -> dict[str, tuple[Path, Path]]:
    """Split -> (images file, labels file) in IDX folder ``path``; "test" only when the t10k files are there."""
    if not path.is_dir():
        raise UserError(f"'{path}' is not a folder of IDX files")
    found: dict[str, tuple[Path, Path]] = {}
    for split, (images_stem, labels_stem) in _IDX_STEMS.items():
        images, labels = _find_idx(path, images_stem, 3), _find_idx(path, labels_stem, 1)
        if images is None and labels is None:
            continue
        if images is None or labels is None:
            have, lack = (images, labels_stem + "-idx1") if labels is None else (labels, images_stem + "-idx3")
            raise UserError(f"'{path}' has '{have.name}' but no {lack}-ubyte[.gz] beside it")
        found[split] = (images, labels)
    if "train" not in found:
        raise UserError(
            f"'{path}' holds no IDX data: expected train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]"
        )
    return found


def read_idx_dir(path: Path, *, fashion: bool = False) -> tuple[Splits, list[str]]:
    """Read an MNIST-style IDX folder; class names are Fashion-MNIST's with ``fashion``, else digits."""
    arrays = {}
    top = 0
    for split, (images_path, labels_path) in find_idx_files(path).items():
        images, labels = _read_idx(images_path, 3), _read_idx(labels_path, 1)
        if len(images) != len(labels):
            raise UserError(f"'{images_path}' holds {len(images)} images but '{labels_path}' {len(labels)} labels")
        if fashion and labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
            raise UserError(f"'{labels_path}' has label {labels.max()}, but Fashion-MNIST has 10 classes")
        arrays[split] = (images, labels)
        top = max(top, int(labels.max(initial=0)))
    # Digit names extend past 9 for IDX sets with more classes (EMNIST and the like).
    classes = list(FASHION_MNIST_CLASSES) if fashion else [str(label) for label in range(max(10, top + 1))]
    splits = {
        split: ImageSet(torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels.astype(np.int64)), classes)
        for split, (images, labels) in arrays.items()
    }
    return splits, []


def _find_idx(folder: Path, stem: str, dims: int) -> Path | None:
    # "train-images-idx3-ubyte" is the usual name; some mirrors write "train-images.idx3-ubyte".
    for separator in ("-", "."):
        for suffix in ("", ".gz"):
            candidate = folder / f"{stem}{separator}idx{dims}-ubyte{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _read_idx(path: Path, dims: int) -> np.ndarray:
    try:
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read IDX file '{path}': {exc}") from None
    header = 4 + 4 * dims
    magic = (_IDX_UBYTE << 8) | dims
    found = int.from_bytes(data[:4], "big")
    if len(data) < header or found != magic:
        raise UserError(f"'{path}' has IDX magic number {found:#010x}; expected {magic:#010x} ({dims}-d bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    if len(data) - header != math.prod(shape):
        raise UserError(
            f"'{path}' holds {len(data) - header} data bytes; its header promises {math.prod(shape)} "
            f"({' x '.join(map(str, shape))})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


# ---------------------------------------------------------------- image files on disk (ImageFolder, CSV)


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


def _subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(Path(entry.path) for entry in os.scandir(folder) if entry.is_dir() and is_visible(entry))


def _split_folders(path: Path) -> dict[str, Path]:
    by_name = {folder.name.lower(): folder for folder in _subfolders(path)}
    train = by_name.get("train")
    if train is None or not _subfolders(train):
        return {"train": path}
    layout = {"train": train}
    for name in _TEST_FOLDER_NAMES:
        if name in by_name and _subfolders(by_name[name]):
            layout["test"] = by_name[name]
            break
    return layout


def _class_folders(folder: Path) -> list[Path]:
    folders = _subfolders(folder)
    if not folders:
        raise UserError(f"'{folder}' has no class folders: expected one folder of images per class")
    return folders


def _image_files(folder: Path) -> list[Path]:
    files = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [name for name in dirs if is_visible(Path(name))]
        files += [Path(parent, name) for name in names if _is_image_name(name)]
    if not files:
        raise UserError(f"class folder '{folder}' holds no images ({', '.join(sorted(SUPPORTED_EXTENSIONS))})")
    return sorted(files)


def _is_image_name(name: str) -> bool:
    return is_visible(Path(name)) and Path(name).suffix.lower() in SUPPORTED_EXTENSIONS


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
            if _is_image_name(name):
                index.setdefault(Path(name).stem, folder / name)
                index.setdefault(name, folder / name)
    return index


def _sorted_labels(labels: set[str]) -> list[str]:
    # Numeric labels sort by value so that label "2" gets index 2, not the index after "10".
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


# ---------------------------------------------------------------- CIFAR-10 python batches

_CIFAR_TRAIN = tuple(f"data_batch_{number}" for number in range(1, 6))
_CIFAR_MEMBERS = (*_CIFAR_TRAIN, "test_batch", "batches.meta")
_CIFAR_FOLDER = "cifar-10-batches-py"

# The only globals a data pickle may name: what rebuilds plain containers and numpy
# arrays (the names of numpy 1 and 2, old and new pickle protocols). Anything else,
# os.system included, is refused before it can be called.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{
        (module, name): obj
        for builtins in ("builtins", "__builtin__")
        for module, name, obj in (
            (builtins, "list", list),
            (builtins, "dict", dict),
            (builtins, "tuple", tuple),
            (builtins, "set", set),
            (builtins, "frozenset", frozenset),
            (builtins, "bytearray", bytearray),
        )
    },
    **{
        (f"{package}.{module}", name): obj
        for package in ("numpy.core", "numpy._core")
        for module, name, obj in (
            ("multiarray", "_reconstruct", _multiarray._reconstruct),
            ("multiarray", "scalar", _multiarray.scalar),
            ("numeric", "_frombuffer", _numeric._frombuffer),
        )
    },
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    struct.error,
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds containers and numpy arrays only; any other global raises UserError."""

    def __init__(self, stream: IO[bytes], source: str) -> None:
        # CIFAR's batches were pickled by Python 2: latin1 restores its byte strings and numpy buffers.
        super().__init__(stream, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UserError(f"'{self.source}' asks to load '{module}.{name}', which a data file may not; refusing it")
        return allowed


def restricted_load(stream: IO[bytes], source: str) -> Any:
    """Unpickle ``stream`` with :class:`RestrictedUnpickler`; a malformed pickle raises UserError."""
    try:
        return RestrictedUnpickler(stream, source).load()
    except _PICKLE_ERRORS as exc:
        raise UserError(f"cannot read '{source}': not a valid data pickle ({exc})") from None


def find_cifar_files(path: Path) -> list[Path]:
    """The files a CIFAR-10 python source is read from: the archive, or the folder's batch files."""
    if path.is_file():
        return [path]
    folder = path / _CIFAR_FOLDER if (path / _CIFAR_FOLDER).is_dir() else path
    missing = [name for name in _CIFAR_MEMBERS if not (folder / name).is_file()]
    if missing:
        raise UserError(f"'{folder}' is not a CIFAR-10 python folder: it lacks {', '.join(missing)}")
    return [folder / name for name in _CIFAR_MEMBERS]


def read_cifar_python(path: Path) -> tuple[Splits, list[str]]:
    """Read ``cifar-10-python.tar.gz`` (straight from the archive) or a ``cifar-10-batches-py`` folder."""
    files = find_cifar_files(path)
    pickles = _cifar_archive(path) if path.is_file() else {file.name: _load_file(file) for file in files}
    meta = _str_keys(pickles["batches.meta"], "batches.meta")
    classes = [name.decode("latin1") if isinstance(name, bytes) else str(name) for name in meta.get("label_names", [])]
    if not classes:
        raise UserError(f"'{path}': batches.meta has no label_names")
    train = [_cifar_batch(pickles[name], f"{path}:{name}", len(classes)) for name in _CIFAR_TRAIN]
    test = _cifar_batch(pickles["test_batch"], f"{path}:test_batch", len(classes))
    splits = {
        "train": ImageSet(
            torch.from_numpy(np.concatenate([images for images, _ in train])),
            torch.from_numpy(np.concatenate([labels for _, labels in train])),
            classes,
        ),
        "test": ImageSet(torch.from_numpy(test[0]), torch.from_numpy(test[1]), classes),
    }
    return splits, []


def _load_file(path: Path) -> Any:
    try:
        with path.open("rb") as stream:
            return restricted_load(stream, str(path))
    except OSError as exc:
        raise UserError(f"cannot read '{path}': {exc}") from None


def _cifar_archive(path: Path) -> dict[str, Any]:
    # Members are unpickled as the archive streams past: one decompression, nothing extracted.
    pickles = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and name in _CIFAR_MEMBERS:
                    pickles[name] = restricted_load(tar.extractfile(member), f"{path}:{member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read archive '{path}': {exc}") from None
    missing = [name for name in _CIFAR_MEMBERS if name not in pickles]
    if missing:
        raise UserError(f"'{path}' is not a CIFAR-10 python archive: it lacks {', '.join(missing)}")
    return pickles


def _str_keys(obj: Any, source: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise UserError(f"'{source}' holds a {type(obj).__name__}, not a dict of arrays")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in obj.items()}


def _cifar_batch(obj: Any, source: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _str_keys(obj, source)
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"'{source}': 'data' must be a uint8 array of N x 3072; found {found}")
    try:
        labels = np.asarray(batch.get("labels"), dtype=np.int64)
    except (TypeError, ValueError):
        labels = np.empty(0, dtype=np.int64)
    if labels.shape != (len(data),) or labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
        raise UserError(f"'{source}': 'labels' must be {len(data)} integers in 0..{num_classes - 1}")
    # Each row holds the red, green then blue 32 x 32 planes: exactly C x H x W.
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels
