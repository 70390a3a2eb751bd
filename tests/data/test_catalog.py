import json
import re
from pathlib import Path

import pytest
import torch

from convscope.data import catalog, images
from convscope.data.catalog import dataset_info, import_dataset, list_datasets, open_dataset
from convscope.data.sources.idx import FASHION_MNIST_CLASSES
from convscope.errors import UserError

from .helpers import CIFAR_CLASSES, make_archive, make_cifar_python, make_csv_folder, make_idx, make_imagefolder

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")
REAL_CIFAR_JPEG = Path("/work/shared/datasets/cifar10-jpeg.tar.gz")


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, any image probing, decoding or archive extraction fails the test."""

    def fail(*_: object, **__: object) -> None:
        raise AssertionError("decoded although cached")

    for name in ("_decode", "_decode_pil", "probe_image"):
        monkeypatch.setattr(images, name, fail)
    monkeypatch.setattr(catalog, "safe_extract", fail)


def test_imagefolder_is_decoded_once_then_served_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, convscope_home: Path
) -> None:
    root = make_imagefolder(tmp_path / "pets", per_class=3, splits=("train", "test"))
    first = open_dataset(f"imagefolder:{root}")
    assert first.name == f"imagefolder:{root}" and first.source == str(root) and first.skipped == []
    assert first.classes == ["cat", "dog"] and first.channels == 3 and first.image_size == (8, 8)
    assert (convscope_home / "cache" / first.key / "meta.json").is_file()
    forbid_decoding(monkeypatch)
    second = open_dataset(f"imagefolder:{root}")
    assert second.key == first.key
    for split in ("train", "test"):
        assert torch.equal(second.splits[split].images, first.splits[split].images)
        assert torch.equal(second.splits[split].labels, first.splits[split].labels)


def test_changing_one_files_bytes_changes_the_key(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "pets", per_class=2)
    key = open_dataset(f"imagefolder:{root}").key
    (root / "dog" / "001.png").write_bytes((root / "cat" / "000.png").read_bytes())
    changed = open_dataset(f"imagefolder:{root}")
    assert changed.key != key
    assert torch.equal(changed.splits["train"].images[3], changed.splits["train"].images[0])


@pytest.mark.parametrize(("fmt", "wrap"), [("tar.gz", True), ("zip", True), ("tgz", False)])
def test_imagefolder_archive_with_or_without_a_top_folder(
    tmp_path: Path, convscope_home: Path, fmt: str, wrap: bool
) -> None:
    packed = make_archive(make_imagefolder(tmp_path / "pets", per_class=2, splits=("train", "test")), fmt, wrap)
    dataset = open_dataset(f"imagefolder:{packed}")
    assert {name: len(part) for name, part in dataset.splits.items()} == {"train": 4, "test": 4}
    assert len(list((convscope_home / "extracted").iterdir())) == 1


def test_cached_archive_is_neither_extracted_nor_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packed = make_archive(make_imagefolder(tmp_path / "pets", per_class=1), "zip")
    key = open_dataset(f"imagefolder:{packed}").key
    forbid_decoding(monkeypatch)
    assert open_dataset(f"imagefolder:{packed}").key == key


def test_idx_and_fashion_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_idx(tmp_path / "digits", n=10, n_test=5)
    digits = open_dataset(f"mnist:{folder}")
    assert digits.classes[:3] == ["0", "1", "2"] and digits.channels == 1 and digits.image_size == (28, 28)
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST", str(folder))
    fashion = open_dataset("fashion-mnist")
    assert fashion.classes == FASHION_MNIST_CLASSES and fashion.key != digits.key
    assert len(fashion.splits["test"]) == 5
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST", str(tmp_path / "absent"))
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        open_dataset("fashion-mnist")


def test_cifar10_from_the_home_data_folder_or_an_error(tmp_path: Path, convscope_home: Path) -> None:
    with pytest.raises(UserError, match="convscope data import cifar10 PATH"):
        open_dataset("cifar10")
    make_cifar_python(convscope_home / "data", per_batch=2, n_test=3)
    dataset = open_dataset("cifar10")
    assert dataset.classes == CIFAR_CLASSES and len(dataset.splits["train"]) == 10
    assert dataset.source == str(convscope_home / "data" / "cifar-10-python.tar.gz")


def test_csv_spec(tmp_path: Path) -> None:
    dataset = open_dataset(f"csv:{make_csv_folder(tmp_path / 'histo')}")
    assert dataset.classes == ["0", "1"] and len(dataset.splits["train"]) == 6 and "test" not in dataset.splits


def test_bad_specs_and_paths(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown data set 'imagenet': expected fashion-mnist, cifar10, mnist:PATH"):
        open_dataset("imagenet")
    with pytest.raises(UserError, match=re.escape(f"data path '{tmp_path}/nope' does not exist")):
        open_dataset(f"imagefolder:{tmp_path}/nope")
    with pytest.raises(UserError, match="data path 'nope' does not exist"):
        import_dataset("x", "nope")
    with pytest.raises(UserError, match="data set name 'a:b'"):
        import_dataset("a:b", str(tmp_path))


def test_import_guesses_the_kind_and_records_the_name(tmp_path: Path, convscope_home: Path) -> None:
    sources = {
        "digits": make_idx(tmp_path / "digits", n=10, n_test=0),
        "fashion": make_idx(tmp_path / "fashion-mnist", n=10, n_test=0),
        "cifar10": make_cifar_python(tmp_path / "cifar", per_batch=2, n_test=2),
        "histo": make_csv_folder(tmp_path / "histo"),
        "pets": make_archive(make_imagefolder(tmp_path / "pets", per_class=2), "tar.gz"),
    }
    for name, path in sources.items():
        assert import_dataset(name, str(path)).name == name
    recorded = json.loads((convscope_home / "catalog.json").read_text())
    kinds = {name: spec.partition(":")[0] for name, spec in recorded.items()}
    expected = {
        "digits": "mnist",
        "fashion": "fashion-mnist",
        "cifar10": "cifar10",
        "histo": "csv",
        "pets": "imagefolder",
    }
    assert kinds == expected
    assert open_dataset("fashion").classes == FASHION_MNIST_CLASSES
    assert open_dataset("cifar10").source == str(sources["cifar10"])  # the imported name wins
    rows = {row["name"]: row for row in list_datasets()}
    assert set(rows) == {"fashion-mnist", "digits", "fashion", "cifar10", "histo", "pets"}
    assert all(rows[name]["available"] and rows[name]["cached"] for name in sources)
    assert rows["pets"]["spec"] == f"imagefolder:{sources['pets']}"
    sources["pets"].unlink()
    assert not {row["name"]: row for row in list_datasets()}["pets"]["available"]


def test_dataset_info(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "pets", classes=("cat", "dog", "emu"), per_class=2, splits=("train", "val"))
    import_dataset("pets", str(root))
    info = dataset_info("pets")
    assert info["classes"] == ["cat", "dog", "emu"] and info["channels"] == 3 and info["image_size"] == [8, 8]
    assert info["splits"]["test"] == {"count": 6, "per_class": {"cat": 2, "dog": 2, "emu": 2}}
    assert info["key"] == open_dataset("pets").key and info["skipped"] == []


def test_skip_bad_entries_serve_only_skip_bad_opens(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "pets", per_class=2)
    bad = root / "cat" / "001.png"
    bad.write_bytes(b"broken")
    with pytest.raises(UserError, match=re.escape(str(bad))):
        import_dataset("pets", str(root))
    dataset = import_dataset("pets", str(root), skip_bad=True)
    assert dataset.skipped == [str(bad)] and len(dataset.splits["train"]) == 3
    assert open_dataset("pets", skip_bad=True).skipped == [str(bad)]
    with pytest.raises(UserError, match=re.escape(str(bad))):
        open_dataset("pets")
    assert dataset_info("pets")["skipped"] == [str(bad)]


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVSCOPE_FASHION_MNIST", raising=False)
    dataset = open_dataset("fashion-mnist")
    assert {name: tuple(part.images.shape) for name, part in dataset.splits.items()} == {
        "train": (60000, 1, 28, 28),
        "test": (10000, 1, 28, 28),
    }
    assert dataset.classes == FASHION_MNIST_CLASSES
    assert torch.bincount(dataset.splits["test"].labels).tolist() == [1000] * 10


@pytest.mark.skipif(not REAL_CIFAR_JPEG.is_file(), reason="the CIFAR-10 JPEG archive is not here")
def test_real_cifar_jpeg_archive_is_guessed_as_an_imagefolder() -> None:
    # Decoding all 60,000 images takes tens of seconds; the guess only reads the first members.
    assert catalog._guess_kind(REAL_CIFAR_JPEG) == "imagefolder"
