"""What kind of data a task learns from (images, texts): how a recipe's data becomes loaders,
what the model's input shape is, and how raw inputs are prepared for prediction.

A task names its modality (``Task.modality``); adding a task on a new kind of data means one
modality class in the table of ``convscope.data.modalities`` and one task module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from convscope.config import Recipe


class PreparedData(Protocol):
    """A recipe's data, split and measured, ready to make loaders."""

    @property
    def info(self) -> dict[str, Any]:
        """What a run directory records (``run.json``): at least ``dataset``, ``classes`` and ``sizes``."""
        ...

    def loaders(self, recipe: Recipe, device: torch.device) -> dict[str, Any]:
        """``train``, ``test`` and, when there is a validation split, ``valid``."""
        ...


class Modality(Protocol):
    def prepare(self, recipe: Recipe, *, skip_bad: bool = False) -> PreparedData:
        """Open, split and measure the recipe's data set."""
        ...

    def evaluation_loader(self, recipe: Recipe, info: dict[str, Any], spec: str, device: torch.device) -> Any:
        """A loader over another data set ``spec`` for a trained run, checked against the run's ``info``."""
        ...

    def model_inputs(self, recipe: Recipe, info: dict[str, Any]) -> dict[str, Any]:
        """The model constructor's input arguments (e.g. ``in_channels``, ``image_size``)."""
        ...

    def load_inputs(self, recipe: Recipe, info: dict[str, Any], inputs: Sequence[str], device: torch.device):
        """Raw inputs given on the command line (file paths, texts) -> one model-ready batch."""
        ...
