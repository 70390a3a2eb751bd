"""Every file a run directory holds, read and written through one place.

A run directory is the user's: a full disk truncates a file, an editor saves it in another encoding, a copy stops
half-way. Any failure to read, decode or parse one of its files is a :class:`UserError` that names the file, says
what is wrong with it and what to do; any failure to write one names the file and why. Never a traceback.

Writes are atomic (:func:`atomic_write`: a temporary ``.NAME.PID.tmp`` next to the target, fsynced, renamed over
it), so a crash or a full disk leaves the previous file intact; :func:`remove_stale_temporaries` clears what an
interrupted write left behind. This module sits at the bottom of the layers (it imports only ``errors``), so
models, engine and everything above read their files through it.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypedDict

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from convscope.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from convscope.config import Recipe
    from convscope.data.modalities import Modality
    from convscope.engine.task import Task

# What to do about a damaged file, by name. ``train --resume`` on a finished run restores the best checkpoint and
# writes the files that come after training again (model.safetensors, summary.json, segmentation.json, plots).
REWRITE = "rewrite it from the run's checkpoints with `convscope train --resume --out {run}`, or train again"
HINTS = {
    "config.toml": "restore it from a copy, or train the run again",
    "run.json": "restore it from a copy, or train the run again",
    "model.safetensors": REWRITE,
    "summary.json": REWRITE,
    "metrics.csv": REWRITE,
    "segmentation.json": REWRITE,
    "eval.json": "delete it and run `convscope evaluate {run}` again",
    "last.pt": "restore it from a copy; without it the run cannot continue: train again with another --out",
    "best.pt": "restore it from a copy; without it the run cannot continue: train again with another --out",
}
RUN_FILE = "run.json"
RUN_FILE_KEYS = ("model", "classes", "sizes")  # what every run.json holds; the modality's fields vary


class RunInfo(TypedDict, total=False):
    """What ``run.json`` records: the model, and the data the run was trained on as its modality describes it
    (``data.modalities``: each modality's ``info``). The first three keys are always there."""

    model: str
    classes: list[str]
    sizes: dict[str, int]  # examples per split
    model_options: dict[str, Any]
    dataset: str
    channels: int  # images
    image_size: list[int]  # images: H, W
    mean: list[float]  # images: the normalisation the run was trained with
    std: list[float]
    skipped: list[str]  # files left out with --skip-bad
    labels: str  # scenes: "multi-hot"; detection: "boxes"


def read_run_info(run_dir: Path) -> RunInfo:
    """``run_dir/run.json``, checked for the keys every run records (a damaged or partial file is a UserError)."""
    return RunInfo(**read_json(run_dir / RUN_FILE, keys=RUN_FILE_KEYS))


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def hint(path: Path) -> str:
    """What to do about ``path`` when it is damaged (its run directory filled in)."""
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return HINTS.get(path.name, "restore it from a copy").format(run=run)


def damaged(path: Path, what: str) -> UserError:
    """The one error for a file that cannot be read: which file, what is wrong, what to do."""
    return UserError(f"{path} {what}: {hint(path)}")


def _reason(error: BaseException) -> str:
    """The first line of an exception's message (or its type), short enough for one error line."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:160]


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise damaged(path, f"cannot be read ({e.strerror or _reason(e)})") from None


def read_text(path: Path) -> str:
    """``path`` as UTF-8 text (every file convscope writes is UTF-8)."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise damaged(path, f"is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start})") from None


def read_json(path: Path, *, keys: Sequence[str] = (), missing_ok: bool = False) -> dict[str, Any]:
    """The JSON object in ``path``, which must hold ``keys``; ``{}`` for a missing file with ``missing_ok``."""
    if missing_ok and not path.exists():
        return {}
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        what = "is empty" if not text.strip() else f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        raise damaged(path, what) from None
    except RecursionError:  # json nests without limit in its input, Python's stack does not
        raise damaged(path, "is not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise damaged(path, f"holds a JSON {type(data).__name__}, not an object")
    absent = [key for key in keys if key not in data]
    if absent:
        raise damaged(path, f"lacks {', '.join(map(repr, absent))}")
    return data


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (onto the CPU)."""
    if not path.is_file():
        raise damaged(path, "is missing")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        # A truncated file, a damaged header or a pickle under this name: safetensors refuses them all here.
        raise damaged(path, f"is not a readable safetensors file ({_reason(e)})") from None


# ---- writing -----------------------------------------------------------------------------------


class WriteFailed(UserError):
    """A file could not be written (a full disk, a read-only folder, ...); ``path`` names it."""

    def __init__(self, path: Path, message: str, *, disk_full: bool = False) -> None:
        super().__init__(message)
        self.path, self.disk_full = path, disk_full


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn any OSError while writing ``path`` into a :class:`WriteFailed` that names it and why."""
    try:
        yield
    except WriteFailed:
        raise
    except OSError as e:
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        why = "the disk is full" if full else (e.strerror or _reason(e))
        raise WriteFailed(path, f"cannot write {path}: {why}", disk_full=full) from None


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary file next to ``path``, then move it over ``path`` in one step."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if os.name == "posix":  # make the rename itself durable; directories cannot be opened on Windows
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the ``.NAME.PID.tmp`` files that an interrupted :func:`atomic_write` left in ``folder`` (SIGKILL,
    power loss), and return them. Only those whose process is gone (or is this one, which is not writing now): a
    live process may be writing its file this moment (``convscope evaluate`` on the same run while it resumes)."""
    removed = []
    for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
        match = _TEMPORARY.match(tmp.name)
        if match and (int(match["pid"]) == os.getpid() or not _alive(int(match["pid"]))):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@dataclass
class LoadedRun:
    """A trained run, ready for inference (``convscope.api.load_run`` makes it); or pretrained weights by name
    (``convscope.api.load_pretrained_run``), whose ``run_dir`` is the current folder (where their outputs go)."""

    run_dir: Path
    recipe: Recipe
    info: RunInfo
    model: nn.Module
    task: Task
    modality: Modality
    device: torch.device

    @property
    def classes(self) -> list[str]:
        return self.info["classes"]
