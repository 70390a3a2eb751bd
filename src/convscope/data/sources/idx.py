"""The IDX source (MNIST, Fashion-MNIST): ``train-images``/``train-labels`` and ``t10k-*`` files, gzipped or not."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from convscope.data.base import ImageSet, Splits
from convscope.errors import UserError

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
