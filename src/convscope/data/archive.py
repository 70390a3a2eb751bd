"""Safe extraction of tar and zip archives.

Every member is checked before it is written: absolute paths, ``..`` escapes,
links, devices and fifos are refused. Members are written by hand (regular files
and folders only) into a temporary folder beside the target, which is renamed
into place once complete, so a target that exists is always whole.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from convscope.errors import UserError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".zip")

# zipfile raises RuntimeError for encrypted members and NotImplementedError for unknown compression.
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError, RuntimeError, NotImplementedError)


def is_archive(path: Path) -> bool:
    """Whether ``path`` names a file ``safe_extract`` can open (judged by its suffix)."""
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract ``archive`` into ``target`` and return ``target``; an existing target is returned as is."""
    if target.exists():
        return target
    if not archive.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise UserError(f"'{archive}' is not an archive: expected one of {', '.join(ARCHIVE_SUFFIXES)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _extract_into(archive, staging)
        staging.rename(target)
    except OSError as exc:
        # A target that appeared meanwhile was extracted by another process; its copy is as good.
        if not target.exists():
            raise UserError(f"cannot extract '{archive}' into '{target}': {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _extract_into(archive: Path, staging: Path) -> None:
    members = _zip_members if archive.name.lower().endswith(".zip") else _tar_members
    made: set[str] = set()  # folders already created: one mkdir per folder, not per file
    try:
        for name, is_dir, stream in members(archive):
            parts = _safe_parts(archive, name)
            folder = os.path.join(staging, *(parts if is_dir else parts[:-1]))
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            if not is_dir:
                with open(os.path.join(folder, parts[-1]), "wb") as out:
                    shutil.copyfileobj(stream, out)
    except UserError:
        raise
    except _CORRUPT as exc:
        raise UserError(f"cannot read archive '{archive}': {exc}") from None


def _tar_members(archive: Path) -> Iterator[tuple[str, bool, BinaryIO | None]]:
    # Stream mode reads the archive once, front to back, with no seeking in the compressed stream.
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isdir():
                yield member.name, True, None
            elif member.isfile():
                yield member.name, False, tar.extractfile(member)
            else:
                raise UserError(f"archive '{archive}' has a {_tar_kind(member)} member '{member.name}'; refusing it")


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    return "special"


def _zip_members(archive: Path) -> Iterator[tuple[str, bool, BinaryIO | None]]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            # Unix zips keep st_mode in the high 16 bits; 0 means "no type recorded" (a plain file).
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                label = "symlink" if kind == stat.S_IFLNK else "special"
                raise UserError(f"archive '{archive}' has a {label} member '{info.filename}'; refusing it")
            if info.is_dir():
                yield info.filename, True, None
            else:
                with zf.open(info) as stream:
                    yield info.filename, False, stream


def _safe_parts(archive: Path, name: str) -> list[str]:
    """The path components of member ``name``, refusing anything that could land outside the target."""
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    parts = [part for part in path.parts if part not in ("", ".")]
    if path.is_absolute() or (parts and parts[0].endswith(":")) or ".." in parts:
        raise UserError(f"archive '{archive}' has member '{name}' outside its folder; refusing it")
    return parts
