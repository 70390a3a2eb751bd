"""Decoded data sets on disk, memory-mapped, keyed by the content they were decoded from.

Layout: ``<cache_root>/cache/<key>/{train,test}-{images,labels}.npy`` and ``meta.json``.
An entry is written in a temporary folder and renamed into place, so an entry
that exists is complete; a second run maps it instead of decoding again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convscope.data.base import ImageSet, Splits

# Bump when decoding changes what a source decodes to, so old entries are not reused.
FORMAT_VERSION = 1

_BLOCK = 1 << 20


def cache_root() -> Path:
    """``$CONVSCOPE_HOME``, or ``~/.cache/convscope``."""
    home = os.environ.get("CONVSCOPE_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "convscope"


def content_key(files: list[Path], base: Path, options: dict[str, Any]) -> str:
    """sha256 over the files' paths relative to ``base``, their bytes, ``options`` and the format version."""
    digest = hashlib.sha256(json.dumps({"format": FORMAT_VERSION, "options": options}, sort_keys=True).encode())
    for rel, path in sorted((path.relative_to(base).as_posix(), path) for path in files):
        # Length-prefix the name so no two (name, bytes) sequences hash the same stream.
        name = rel.encode()
        digest.update(len(name).to_bytes(8, "little") + name)
        digest.update(path.stat().st_size.to_bytes(8, "little"))
        with path.open("rb") as stream:
            while block := stream.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def entry_dir(key: str) -> Path:
    return cache_root() / "cache" / key


def is_cached(key: str) -> bool:
    return (entry_dir(key) / "meta.json").is_file()


def save_splits(key: str, splits: Splits, meta: dict[str, Any]) -> Path:
    """Write ``splits`` under ``key`` with ``meta`` plus the classes and counts; returns the entry's folder."""
    final = entry_dir(key)
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        for name, part in splits.items():
            np.save(staging / f"{name}-images.npy", part.images.numpy())
            np.save(staging / f"{name}-labels.npy", part.labels.numpy())
        full_meta = {
            **meta,
            "format": FORMAT_VERSION,
            "classes": splits["train"].classes,
            "counts": {name: len(part) for name, part in splits.items()},
        }
        (staging / "meta.json").write_text(json.dumps(full_meta, indent=2))
        staging.rename(final)
    except OSError:
        if not final.exists():  # else another process saved the same content first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def load_splits(key: str) -> tuple[Splits, dict[str, Any]] | None:
    """The splits saved under ``key``, memory-mapped (copy-on-write), and their meta; None if absent."""
    folder = entry_dir(key)
    if not (folder / "meta.json").is_file():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        splits = {name: _load_split(folder, name, meta["classes"]) for name in meta["counts"]}
    except (OSError, ValueError, KeyError):
        # A damaged entry (a file removed or cut short by hand): drop it so it is rebuilt.
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return splits, meta


def _load_split(folder: Path, name: str, classes: list[str]) -> ImageSet:
    # mmap_mode="c" maps the file copy-on-write: writable, so torch.from_numpy
    # neither warns nor copies, and writes never reach the cache.
    images = torch.from_numpy(np.load(folder / f"{name}-images.npy", mmap_mode="c"))
    labels = torch.from_numpy(np.load(folder / f"{name}-labels.npy", mmap_mode="c"))
    return ImageSet(images, labels, classes)
