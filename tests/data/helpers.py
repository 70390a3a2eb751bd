"""Tiny data sets in every layout convscope reads, generated under a test's tmp_path.

Pixels are a deterministic function of (class, index), so a test can compare
what was decoded with :func:`pixels` for the lossless formats.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_CIFAR_TRAIN = [f"data_batch_{number}" for number in range(1, 6)]


def pixels(seed: int, size: tuple[int, int] = (8, 8), channels: int = 3) -> np.ndarray:
    """Random uint8 pixels, H x W x C (H x W for one channel), the same for the same seed."""
    shape = (*size, channels) if channels > 1 else size
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def make_image(path: Path, *, seed: int = 0, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> Path:
    """Write one image of PIL ``mode`` (RGB, L, RGBA, LA, P, CMYK, 1, I;16) to ``path``; the suffix picks the format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        # Spread 8-bit values over 16 bits (v * 257) so the high byte is the original value.
        image = Image.fromarray(pixels(seed, size, 1).astype(np.uint16) * 257)
    elif mode in ("RGBA", "LA", "CMYK"):
        image = Image.frombytes(mode, (size[1], size[0]), pixels(seed, size, len(mode)).tobytes())
    else:
        image = Image.fromarray(pixels(seed, size, 3)).convert(mode)
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    if path.suffix.lower() == ".webp":
        options = {"lossless": True, "exact": True}  # exact: keep RGB under transparent pixels
    image.save(path, **options)
    return path


def make_imagefolder(
    root: Path,
    classes: Sequence[str] = ("cat", "dog"),
    per_class: int = 4,
    size: tuple[int, int] = (8, 8),
    mode: str = "RGB",
    ext: str = "png",
    splits: Sequence[str] = (),
) -> Path:
    """``root/<class>/<i>.<ext>``, or ``root/<split>/<class>/<i>.<ext>`` for each of ``splits``; returns root."""
    for offset, split in enumerate(splits or [""]):
        for label, name in enumerate(classes):
            for index in range(per_class):
                seed = 1000 * offset + 100 * label + index
                make_image(root / split / name / f"{index:03d}.{ext}", seed=seed, size=size, mode=mode)
    return root


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes holding ``array``."""
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", dim) for dim in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_idx(root: Path, n: int = 20, n_test: int = 10, gz: bool = True, size: tuple[int, int] = (28, 28)) -> Path:
    """An MNIST-style folder: train-/t10k- images and labels (labels cycle 0..9); ``n_test=0`` omits t10k."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, count, seed in (("train", n, 0), ("t10k", n_test, 1)):
        if count == 0:
            continue
        images = pixels(seed, (count * size[0], size[1]), 1).reshape(count, *size)
        labels = np.arange(count) % 10
        for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            data = idx_bytes(array)
            (root / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(data) if gz else data)
    return root


class _Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING), as CIFAR-10's batches were written."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    """``obj`` pickled the way Python 2 with numpy 1 did (protocol 2, ``numpy.core.multiarray`` names)."""
    stream = io.BytesIO()
    _Python2Pickler(stream, protocol=2).dump(obj)
    return stream.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def cifar_batches(per_batch: int = 4, n_test: int = 4) -> dict[str, dict]:
    """The seven CIFAR-10 python members (bytes keys, like the originals) with deterministic data."""
    members: dict[str, dict] = {}
    for number, name in enumerate([*_CIFAR_TRAIN, "test_batch"]):
        count = n_test if name == "test_batch" else per_batch
        data = pixels(number, (count, 3 * 32 * 32), 1)
        labels = [(number + index) % 10 for index in range(count)]
        members[name] = {b"batch_label": name.encode(), b"labels": labels, b"data": data}
    members["batches.meta"] = {b"label_names": [name.encode() for name in CIFAR_CLASSES], b"num_vis": 3072}
    return members


def make_cifar_python(root: Path, per_batch: int = 4, n_test: int = 4, fmt: str = "tar.gz", py2: bool = True) -> Path:
    """``root/cifar-10-python.tar.gz`` (fmt "tar.gz") or ``root/cifar-10-batches-py/`` (fmt "folder")."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in cifar_batches(per_batch, n_test).items():
        (folder / name).write_bytes(py2_pickle(obj) if py2 else pickle.dumps(obj))
    if fmt == "folder":
        return folder
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive


def make_csv_folder(
    root: Path,
    labels: Sequence[str] = ("0", "1", "0", "1", "1", "0"),
    ext: str = "tif",
    in_train: bool = True,
    size: tuple[int, int] = (8, 8),
    csv_name: str = "train_labels.csv",
) -> Path:
    """The Kaggle histopathology layout: ``root/<csv_name>`` (id,label) and ``root/train/<id>.<ext>``."""
    images = root / "train" if in_train else root
    rows = ["id,label"]
    for index, label in enumerate(labels):
        ident = f"{index:04x}abcd"
        make_image(images / f"{ident}.{ext}", seed=index, size=size)
        rows.append(f"{ident},{label}")
    (root / csv_name).write_text("\n".join(rows) + "\n")
    return root


def make_archive(folder: Path, fmt: str = "tar.gz", wrap: bool = True) -> Path:
    """Pack ``folder`` beside itself as ``<name>.<fmt>`` (tar, tar.gz, tgz, tar.bz2, zip).

    With ``wrap`` members sit under one top folder named like ``folder``, as most archives do.
    """
    archive = folder.parent / f"{folder.name}.{fmt}"
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    names = [(path, (Path(folder.name) if wrap else Path()) / path.relative_to(folder)) for path in files]
    if fmt == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for path, name in names:
                zf.write(path, name.as_posix())
        return archive
    mode = {"tar": "w", "tar.gz": "w:gz", "tgz": "w:gz", "tar.bz2": "w:bz2"}[fmt]
    with tarfile.open(archive, mode) as tar:
        for path, name in names:
            tar.add(path, name.as_posix())
    return archive
