import io
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from convscope.data.sources.cifar import read_cifar_python, restricted_load
from convscope.data.sources.csv_folder import read_csv_folder
from convscope.data.sources.idx import FASHION_MNIST_CLASSES, read_idx_dir
from convscope.data.sources.imagefolder import read_imagefolder
from convscope.errors import UserError

from .helpers import (
    CIFAR_CLASSES,
    cifar_batches,
    idx_bytes,
    make_cifar_python,
    make_csv_folder,
    make_idx,
    make_image,
    make_imagefolder,
    pixels,
)

# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_gz_or_raw(tmp_path: Path, gz: bool) -> None:
    splits, skipped = read_idx_dir(make_idx(tmp_path, n=12, n_test=5, gz=gz))
    assert skipped == []
    assert splits["train"].images.shape == (12, 1, 28, 28) and splits["test"].images.shape == (5, 1, 28, 28)
    assert splits["train"].labels.dtype == torch.int64 and splits["train"].labels[:3].tolist() == [0, 1, 2]
    assert splits["train"].classes == [str(digit) for digit in range(10)]
    expected = pixels(0, (12 * 28, 28), 1).reshape(12, 28, 28)
    assert torch.equal(splits["train"].images[:, 0], torch.from_numpy(expected))


def test_idx_fashion_names_and_optional_test_split(tmp_path: Path) -> None:
    splits, _ = read_idx_dir(make_idx(tmp_path, n_test=0), fashion=True)
    assert list(splits) == ["train"] and splits["train"].classes == FASHION_MNIST_CLASSES


def test_idx_bad_magic_counts_and_missing_files(tmp_path: Path) -> None:
    folder = make_idx(tmp_path, n=10, n_test=0, gz=False)
    images = folder / "train-images-idx3-ubyte"
    labels = folder / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.zeros(9, dtype=np.uint8)))
    with pytest.raises(UserError, match=r"10 images but .* 9 labels"):
        read_idx_dir(folder)
    labels.write_bytes(idx_bytes(np.zeros((10, 2, 2), dtype=np.uint8)))  # a 3-d file where labels belong
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte' has IDX magic number 0x00000803"):
        read_idx_dir(folder)
    images.write_bytes(images.read_bytes()[:-5])
    labels.write_bytes(idx_bytes(np.zeros(10, dtype=np.uint8)))
    with pytest.raises(UserError, match="data bytes; its header promises 7840"):
        read_idx_dir(folder)
    labels.unlink()
    with pytest.raises(UserError, match="no train-labels-idx1-ubyte"):
        read_idx_dir(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no IDX data"):
        read_idx_dir(tmp_path / "empty")
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    images.unlink()
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(10, dtype=np.uint8)))
    with pytest.raises(UserError, match=r"cannot read IDX file .*train-images-idx3-ubyte\.gz"):
        read_idx_dir(folder)


# ---------------------------------------------------------------- ImageFolder


def test_imagefolder_flat_layout_is_all_train(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "d", classes=("dog", "cat", "bird"), per_class=2)
    (root / "cat" / "notes.txt").write_text("ignored")
    (root / "cat" / "._000.png").write_bytes(b"macOS resource fork")
    (root / "__MACOSX").mkdir()
    splits, skipped = read_imagefolder(root)
    assert list(splits) == ["train"] and skipped == []
    train = splits["train"]
    assert train.classes == ["bird", "cat", "dog"] and train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert train.images.shape == (6, 3, 8, 8)
    assert torch.equal(train.images[2], torch.from_numpy(pixels(100)).permute(2, 0, 1))  # cat/000.png


@pytest.mark.parametrize("test_name", ["test", "val", "valid"])
def test_imagefolder_split_layout(tmp_path: Path, test_name: str) -> None:
    root = make_imagefolder(tmp_path / "d", per_class=2, splits=("train", test_name))
    splits, _ = read_imagefolder(root)
    assert {name: len(part) for name, part in splits.items()} == {"train": 4, "test": 4}
    assert splits["test"].classes == ["cat", "dog"]


def test_imagefolder_shares_channels_and_size_across_splits(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_imagefolder(root, mode="L", splits=("train",), per_class=2)
    make_image(root / "test" / "cat" / "x.jpg", size=(12, 10))  # one colour image, another size
    splits, _ = read_imagefolder(root)
    assert splits["train"].images.shape[1:] == splits["test"].images.shape[1:] == (3, 8, 8)
    sized, _ = read_imagefolder(root, size=(4, 4))
    assert sized["test"].image_size == (4, 4)


def test_imagefolder_layout_errors(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "d", per_class=1)
    (root / "empty").mkdir()
    with pytest.raises(UserError, match=r"class folder '.*empty' holds no images"):
        read_imagefolder(root)
    with pytest.raises(UserError, match="has no class folders"):
        read_imagefolder(root / "cat")
    with pytest.raises(UserError, match="is not a folder"):
        read_imagefolder(root / "missing")
    split = make_imagefolder(tmp_path / "s", per_class=1, splits=("train", "test"))
    make_image(split / "test" / "cow" / "0.png")
    with pytest.raises(UserError, match=r"class folder '.*cow' has no counterpart"):
        read_imagefolder(split)


def test_imagefolder_skip_bad(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "d", per_class=3)
    bad = root / "dog" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(UserError, match=re.escape(str(bad))):
        read_imagefolder(root)
    splits, skipped = read_imagefolder(root, skip_bad=True)
    assert skipped == [str(bad)]
    assert splits["train"].labels.tolist() == [0, 0, 0, 1, 1]


# ---------------------------------------------------------------- CIFAR-10 python


@pytest.mark.parametrize(("fmt", "py2"), [("tar.gz", True), ("folder", True), ("folder", False)])
def test_cifar_python_archive_or_folder(tmp_path: Path, fmt: str, py2: bool) -> None:
    source = make_cifar_python(tmp_path, per_batch=3, n_test=2, fmt=fmt, py2=py2)
    splits, skipped = read_cifar_python(source)
    assert skipped == [] and splits["train"].classes == CIFAR_CLASSES
    assert splits["train"].images.shape == (15, 3, 32, 32) and splits["test"].images.shape == (2, 3, 32, 32)
    batches = cifar_batches(per_batch=3, n_test=2)
    assert splits["train"].labels[:3].tolist() == batches["data_batch_1"][b"labels"]
    red = batches["data_batch_1"][b"data"][0, :1024].reshape(32, 32)
    assert torch.equal(splits["train"].images[0, 0], torch.from_numpy(red))


def test_cifar_parent_folder_and_missing_batch(tmp_path: Path) -> None:
    make_cifar_python(tmp_path, fmt="folder")
    assert len(read_cifar_python(tmp_path)[0]["test"]) == 4  # the folder holding cifar-10-batches-py/
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="lacks data_batch_3"):
        read_cifar_python(tmp_path)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code_and_has_no_effect(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = make_cifar_python(tmp_path, fmt="folder")
    (folder / "data_batch_2").write_bytes(pickle.dumps({"data": _Exploit(marker), "labels": []}))
    with pytest.raises(UserError, match=r"data_batch_2' asks to load 'posix\.system'"):
        read_cifar_python(folder)
    assert not marker.exists()
    evil = pickle.dumps(_Exploit(marker), protocol=0)
    with pytest.raises(UserError, match="asks to load"):
        restricted_load(io.BytesIO(evil), "evil")
    assert not marker.exists()
    with pytest.raises(UserError, match=r"asks to load 'builtins\.eval'"):
        restricted_load(io.BytesIO(b"cbuiltins\neval\n(S'1'\ntR."), "evil")
    with pytest.raises(UserError, match="not a valid data pickle"):
        restricted_load(io.BytesIO(b"\x80\x04garbage"), "junk")


# ---------------------------------------------------------------- CSV-labelled folder


@pytest.mark.parametrize("in_train", [True, False])
def test_csv_folder_images_in_train_or_beside(tmp_path: Path, in_train: bool) -> None:
    root = make_csv_folder(tmp_path, labels=("b", "a", "b"), in_train=in_train, ext="png")
    for path in (root, root / "train_labels.csv"):
        splits, skipped = read_csv_folder(path)
        assert skipped == [] and list(splits) == ["train"]
        assert splits["train"].classes == ["a", "b"] and splits["train"].labels.tolist() == [1, 0, 1]
        assert torch.equal(splits["train"].images[1], torch.from_numpy(pixels(1)).permute(2, 0, 1))


def test_csv_numeric_labels_sort_by_value(tmp_path: Path) -> None:
    root = make_csv_folder(tmp_path, labels=("10", "2", "0"))
    splits, _ = read_csv_folder(root)
    assert splits["train"].classes == ["0", "2", "10"] and splits["train"].labels.tolist() == [2, 1, 0]


def test_csv_missing_image_names_csv_line_and_id(tmp_path: Path) -> None:
    root = make_csv_folder(tmp_path)
    (root / "train" / "0002abcd.tif").unlink()
    with pytest.raises(UserError, match=r"train_labels\.csv line 4: no image for id '0002abcd'"):
        read_csv_folder(root)
    splits, skipped = read_csv_folder(root, skip_bad=True)
    assert len(splits["train"]) == 5 and len(skipped) == 1 and "line 4" in skipped[0]


def test_csv_layout_errors(tmp_path: Path) -> None:
    root = make_csv_folder(tmp_path / "a")
    (root / "train_labels.csv").write_text("image,class\nx,1\n")
    with pytest.raises(UserError, match="needs columns 'id' and 'label'; found image, class"):
        read_csv_folder(root)
    (root / "other.csv").write_text("id,label\n")
    with pytest.raises(UserError, match=r"exactly one CSV file of labels; found other\.csv, train_labels\.csv"):
        read_csv_folder(root)
    with pytest.raises(UserError, match="has no rows"):
        read_csv_folder(root / "other.csv")
