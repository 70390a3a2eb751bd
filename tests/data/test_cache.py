import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from convscope.data import cache
from convscope.data.base import ImageSet
from convscope.data.cache import cache_root, content_key, load_splits, save_splits


def _splits() -> dict[str, ImageSet]:
    images = torch.arange(5 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(5, 3, 4, 4)
    return {
        "train": ImageSet(images[:3], torch.tensor([0, 1, 1]), ["a", "b"]),
        "test": ImageSet(images[3:], torch.tensor([1, 0]), ["a", "b"]),
    }


def test_cache_root_follows_convscope_home(convscope_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_root() == convscope_home
    monkeypatch.delenv("CONVSCOPE_HOME")
    monkeypatch.setenv("HOME", "/somewhere")
    assert cache_root() == Path("/somewhere/.cache/convscope")


def test_content_key_covers_bytes_names_and_options(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"one")
    (tmp_path / "b").write_bytes(b"two")
    files = [tmp_path / "a", tmp_path / "b"]
    key = content_key(files, tmp_path, {"kind": "x"})
    assert len(key) == 64 and key == content_key(files[::-1], tmp_path, {"kind": "x"})  # order does not matter
    assert key != content_key(files, tmp_path, {"kind": "y"})
    moved = tmp_path / "sub"
    moved.mkdir()
    (moved / "a").write_bytes(b"one")
    assert key != content_key([moved / "a", files[1]], tmp_path, {"kind": "x"})
    (tmp_path / "b").write_bytes(b"twO")
    assert key != content_key(files, tmp_path, {"kind": "x"})
    # Names and bytes are delimited: "ab" + "c" is not "a" + "bc".
    (tmp_path / "ab").write_bytes(b"c")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a").write_bytes(b"bc")
    assert content_key([tmp_path / "ab"], tmp_path, {}) != content_key([tmp_path / "x" / "a"], tmp_path / "x", {})


def test_save_then_load_memory_maps_without_copy_or_warning(convscope_home: Path) -> None:
    splits = _splits()
    folder = save_splits("k1", splits, {"source": "somewhere", "skipped": ["bad.png"]})
    assert folder == convscope_home / "cache" / "k1"
    assert sorted(path.name for path in folder.iterdir()) == [
        "meta.json",
        "test-images.npy",
        "test-labels.npy",
        "train-images.npy",
        "train-labels.npy",
    ]
    assert [path.name for path in folder.parent.iterdir()] == ["k1"]  # no staging folder left
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["counts"] == {"train": 3, "test": 2} and meta["classes"] == ["a", "b"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded, meta = load_splits("k1")
    assert meta["source"] == "somewhere" and meta["skipped"] == ["bad.png"]
    for name, part in splits.items():
        assert torch.equal(loaded[name].images, part.images) and torch.equal(loaded[name].labels, part.labels)
        assert loaded[name].classes == ["a", "b"]
    # Mapped copy-on-write: writes stay in memory, the cache is untouched.
    loaded["train"].images[0] = 0
    assert np.load(folder / "train-images.npy")[0].any()


def test_load_absent_or_damaged_entries(convscope_home: Path) -> None:
    assert load_splits("nothing") is None
    folder = save_splits("k2", _splits(), {"source": "s", "skipped": []})
    (folder / "test-images.npy").unlink()
    assert load_splits("k2") is None
    assert not folder.exists()  # dropped, so the next save rebuilds it
    save_splits("k2", _splits(), {"source": "s", "skipped": []})
    assert cache.is_cached("k2") and load_splits("k2") is not None


def test_save_keeps_an_existing_entry(convscope_home: Path) -> None:
    save_splits("k3", _splits(), {"source": "first", "skipped": []})
    save_splits("k3", _splits(), {"source": "second", "skipped": []})
    assert load_splits("k3")[1]["source"] == "first"
