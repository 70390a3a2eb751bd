"""Checkpoint files: atomic writes, safe loads, and a clear error for another model's weights.

Writes go through :func:`convscope.run.atomic_write` (a temporary file in the same folder, fsynced and
renamed over the target), so a crash or a full disk mid-write leaves the previous file intact. Loads always use
``weights_only=True`` (no arbitrary code from a downloaded file) onto the CPU; so the state may hold only plain
containers, numbers, strings and tensors, which :func:`save_checkpoint` checks before writing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convscope.errors import UserError
from convscope.run import atomic_write, damaged

FORMAT = "convscope-checkpoint/1"
_PLAIN_LEAVES = (type(None), bool, int, float, str, torch.Tensor, torch.dtype, torch.Size)


def _check_plain(value: Any, where: str) -> None:
    """Refuse what ``torch.load(weights_only=True)`` would refuse, at save time, naming where it is."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"checkpoint key {where}[{key!r}] must be a str or int")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple) and not isinstance(value, torch.Size):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN_LEAVES):
        raise TypeError(f"checkpoint value {where} is a {type(value).__name__}; use plain data or tensors")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plain data and tensors) to ``path`` atomically, stamped with the format."""
    state = {"format": FORMAT, **state}
    _check_plain(state, "state")
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU."""
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4" of a foreign file: it loads or it is refused
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True, map_location="cpu")
    # The weights-only unpickler fails on damaged bytes in many ways (UnpicklingError, EOFError, IndexError from its
    # stack, struct.error, ...): any exception while parsing means the file cannot be a checkpoint.
    except Exception as e:
        # The weights-only loader's message is a page about torch versions; its "Unsupported ..." line says why.
        lines = [line.strip() for line in str(e).strip().splitlines()] or [type(e).__name__]
        reason = next((line for line in lines if "nsupported" in line), lines[0])[:160]
        raise damaged(path, f"is not a convscope checkpoint or is truncated ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise damaged(path, f"is not a convscope checkpoint (no {FORMAT!r} marker)")
    return state


def _few(keys: list[str], limit: int = 2) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_model_state(model: nn.Module, state: Mapping[str, Any], path: Path) -> None:
    """Load ``state`` (a model state dict read from ``path``) strictly into ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and getattr(state[k], "shape", None) != own[k].shape
    ]
    problems = [
        f"{label}: {_few(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shapes", reshaped))
        if keys
    ]
    if problems:
        raise UserError(f"{path} was written for a different model ({'; '.join(problems)})")
    model.load_state_dict(state)
