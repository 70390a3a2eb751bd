import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from convscope.data import archive
from convscope.data.archive import is_archive, safe_extract
from convscope.errors import UserError

from .helpers import make_archive, make_imagefolder


def _tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "tgz", "tar.bz2", "zip"])
def test_extracts_every_format(tmp_path: Path, fmt: str) -> None:
    folder = make_imagefolder(tmp_path / "data", per_class=2)
    packed = make_archive(folder, fmt)
    assert is_archive(packed)
    target = tmp_path / "out"
    assert safe_extract(packed, target) == target
    assert _tree(target / "data") == _tree(folder)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # no staging left


def test_second_call_returns_the_target_without_extracting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packed = make_archive(make_imagefolder(tmp_path / "data", per_class=1), "zip")
    target = safe_extract(packed, tmp_path / "out")

    def fail(*_: object) -> None:
        raise AssertionError("extracted again")

    monkeypatch.setattr(archive, "_extract_into", fail)
    assert safe_extract(packed, target) == target


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


MALICIOUS_TAR = [
    ("../evil.txt", _member("../evil.txt")),
    ("/abs.txt", _member("/abs.txt")),
    ("a/../../evil.txt", _member("a/../../evil.txt")),
    ("link", _member("link", tarfile.SYMTYPE, "../../outside")),
    ("hard", _member("hard", tarfile.LNKTYPE, "fine.txt")),
    ("fifo", _member("fifo", tarfile.FIFOTYPE)),
    ("dev", _member("dev", tarfile.CHRTYPE)),
]


@pytest.mark.parametrize(("name", "member"), MALICIOUS_TAR, ids=[name for name, _ in MALICIOUS_TAR])
def test_malicious_tar_members_are_refused(tmp_path: Path, name: str, member: tarfile.TarInfo) -> None:
    work = tmp_path / "work"
    work.mkdir()
    packed = _tar_with(tmp_path / "evil.tar.gz", member, b"evil")
    before = _tree(tmp_path)
    with pytest.raises(UserError, match=f"member '{name}'"):
        safe_extract(packed, work / "deep" / "target")
    assert _tree(tmp_path) == before  # nothing written anywhere, target included
    assert not (work / "deep" / "target").exists()
    assert not (Path("/abs.txt")).exists()


def _zip_with(path: Path, info: zipfile.ZipInfo, data: bytes = b"evil") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fine.txt", b"ok")
        zf.writestr(info, data)
    return path


def _zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


MALICIOUS_ZIP = [
    ("../evil.txt", zipfile.ZipInfo("../evil.txt")),
    ("/abs.txt", zipfile.ZipInfo("/abs.txt")),
    ("..\\evil.txt", zipfile.ZipInfo("..\\evil.txt")),
    ("link", _zip_symlink("link")),
]


@pytest.mark.parametrize(("name", "info"), MALICIOUS_ZIP, ids=[name for name, _ in MALICIOUS_ZIP])
def test_malicious_zip_members_are_refused(tmp_path: Path, name: str, info: zipfile.ZipInfo) -> None:
    work = tmp_path / "work"
    work.mkdir()
    packed = _zip_with(tmp_path / "evil.zip", info)
    before = _tree(tmp_path)
    with pytest.raises(UserError, match="member '" + name.replace("\\", "\\\\")):
        safe_extract(packed, work / "target")
    assert _tree(tmp_path) == before
    assert not (work / "target").exists()


def test_corrupt_and_unknown_archives_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.tar.gz").write_bytes(b"not gzip at all")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    (tmp_path / "data.rar").write_bytes(b"rar")
    for name in ("bad.tar.gz", "bad.zip", "data.rar"):
        with pytest.raises(UserError, match=name):
            safe_extract(tmp_path / name, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not is_archive(tmp_path / "data.rar")
