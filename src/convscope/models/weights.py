"""Initialising a model from weights a user points to (``transfer.init``): a run directory, a torchvision-style
state dict (``.pth``/``.pt``, read with ``weights_only=True``: nothing in the file is ever executed), a
safetensors file, or pretrained weights by name (``torchvision:resnet18``, ``timm:NAME``: see
:mod:`convscope.models.pretrained`).

Tensors are matched by name and shape. A file key may carry the model's own names (``features.conv1.weight``,
a convscope run) or torchvision's (``conv1.weight``, ``fc.weight``): a model key is also tried without its
``features.``/``head.`` prefix, and a file's ``module.`` prefix (DataParallel) is dropped. What does not fit
(a head for another number of classes, a stem for other channels) keeps its fresh initialisation and is listed.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from convscope.errors import UserError
from convscope.models.pretrained import is_pretrained_name, load_pretrained
from convscope.run import RUN_FILE, read_json, read_weights

RUN_WEIGHTS = "model.safetensors"
_PREFIXES = ("features.", "head.")
_WRAPPERS = ("state_dict", "model")  # a Lightning checkpoint, a convscope checkpoint (checkpoints/last.pt)


@dataclass
class LoadReport:
    path: Path
    loaded: list[str]  # model keys filled from the file
    left: list[str]  # model keys left at their initial values ("key: why")
    unused: int  # file tensors that went nowhere
    origin: str = ""  # named weights: which ones, and the file they were read from
    # named weights: the mean and std of the images they were trained on (the data should be normalised alike)
    normalization: tuple[list[float], list[float]] | None = None

    def describe(self) -> str:
        origin = f" ({self.origin})" if self.origin else ""
        lines = [f"init: loaded {len(self.loaded)} of {len(self.loaded) + len(self.left)} tensors from "
                 f"{self.path}{origin}"]  # fmt: skip
        if self.left:
            shown = ", ".join(self.left[:6]) + (f", ... (+{len(self.left) - 6} more)" if len(self.left) > 6 else "")
            lines.append(f"init: left at their initial values: {shown}")
        if self.unused:
            lines.append(f"init: {self.unused} tensors of the file fit nothing in the model")
        return "\n".join(lines)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path``: a run directory (its ``model.safetensors``), ``.safetensors``, or a torch file."""
    path = Path(path)
    if path.is_dir():
        if not (path / RUN_WEIGHTS).is_file():
            raise UserError(f"init '{path}' is a folder without {RUN_WEIGHTS}: not a finished run directory")
        path = path / RUN_WEIGHTS
    if not path.is_file():
        raise UserError(f"init '{path}' does not exist: expected a run directory, a .pth or a .safetensors file")
    if path.suffix == ".safetensors":
        return read_weights(path)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        # The weights-only unpickler names what it refused: a GLOBAL (a callable: code) or an opcode.
        details = [line.strip() for line in str(e).splitlines() if "nsupported" in line]
        refused = [line for line in details if "GLOBAL" in line.upper()]
        if not refused:
            why = f": {details[0]}" if details else ""
            raise UserError(
                f"init '{path}' is not a torch state dict file (the weights-only loader refused it{why})"
            ) from None
        raise UserError(
            f"init '{path}' holds pickled objects that would run code when loaded; refused ({refused[0][:120]}). "
            "Save a plain state dict (torch.save(model.state_dict(), ...)) or safetensors"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise UserError(f"init '{path}' is not a torch state dict file ({str(e).strip()[:160]})") from None
    for key in _WRAPPERS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state:
        raise UserError(f"init '{path}' is not a state dict: expected a mapping of names to tensors")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"init '{path}' is not a state dict: entry {bad[0]!r} is not a named tensor")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _run_classes(path: Path) -> list[str] | None:
    """The classes a run directory was trained on (its ``run.json``), None for a weights file."""
    info = path / RUN_FILE
    if not path.is_dir() or not info.is_file():
        return None
    return read_json(info).get("classes")


def _run_model(path: Path) -> str | None:
    """The model a run directory trained (its ``run.json``), None for a weights file."""
    info = path / RUN_FILE
    if not path.is_dir() or not info.is_file():
        return None
    return read_json(info).get("model")


def load_initial_weights(
    model: nn.Module,
    path: str | Path,
    *,
    classes: list[str] | None = None,
    from_models: tuple[str, ...] | None = None,
) -> LoadReport:
    """Copy every tensor of ``path`` that fits ``model`` by name and shape; a UserError when none fits.

    A run directory trained on other ``classes`` gives only its body: its head would fit a model with as many
    classes, but each output would mean another class. ``from_models`` (a task that fine-tunes what one kind of
    run pre-trained, e.g. split-brain): a run directory must have trained one of these models, and the file
    must fill the whole body (``features.``).
    """
    shown = Path(path)
    trained = _run_model(shown)
    if from_models and shown.is_dir() and trained not in from_models:
        raise UserError(
            f"init '{shown}' is {f'a {trained!r} run' if trained else 'not a run directory (no run.json)'}, not a "
            f"run of model {' or '.join(map(repr, from_models))}: this task fine-tunes what such a run pre-trained"
        )
    pretrained = load_pretrained(str(path)) if is_pretrained_name(path) else None
    source = pretrained.state_dict if pretrained is not None else read_state_dict(path)
    trained_on = _run_classes(shown)
    if classes is not None and trained_on is not None and trained_on != classes:
        source = {k: v for k, v in source.items() if not k.startswith("head.")}
    own = model.state_dict()
    chosen: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    left = []
    for key, tensor in own.items():
        names = [key, *(key.removeprefix(p) for p in _PREFIXES if key.startswith(p))]
        found = [n for n in names if n in source]
        fitting = [n for n in found if source[n].shape == tensor.shape]
        if fitting:
            chosen[key] = source[fitting[0]].to(tensor.dtype)
            used.add(fitting[0])
        elif found:
            left.append(f"{key} (file {tuple(source[found[0]].shape)}, model {tuple(tensor.shape)})")
        elif key.startswith("head.") and trained_on is not None and trained_on != classes:
            left.append(f"{key} (the run was trained on other classes)")
        else:
            left.append(f"{key} (not in the file)")
    if not chosen:
        example = next(iter(source))
        raise UserError(
            f"init '{shown}': none of its {len(source)} tensors fits the model by name and shape "
            f"(e.g. {example!r} {tuple(source[example].shape)}; the model has {next(iter(own))!r} "
            f"{tuple(next(iter(own.values())).shape)}): weights of another architecture?"
        )
    missing = [key for key in left if key.startswith("features.")]
    if from_models and missing:
        raise UserError(
            f"init '{shown}' does not fill the network's body (e.g. {missing[0]}): not the weights of a "
            f"{' or '.join(map(repr, from_models))} run with the same options"
        )
    model.load_state_dict(chosen, strict=False)
    report = LoadReport(shown, sorted(chosen), left, len(source) - len(used))
    if pretrained is not None:
        report.origin = f"{pretrained.weights}, {pretrained.source}"
        report.normalization = (pretrained.mean, pretrained.std)
    return report
