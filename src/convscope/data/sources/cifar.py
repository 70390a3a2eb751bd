"""The CIFAR-10 python source: the five ``data_batch_*``, ``test_batch`` and ``batches.meta`` pickles, in a
folder or in the ``.tar.gz`` archive, read by a restricted unpickler that builds only numpy arrays."""

from __future__ import annotations

import pickle
import struct
import tarfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from convscope.data.base import ImageSet, Splits
from convscope.errors import UserError

try:
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


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
