"""Shared building blocks: the body/head network shape every model has, and size checks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from convscope.errors import UserError


class ConvNet(nn.Module):
    """``head(features(x))``: ``features`` is the convolutional body (N x C x h x w maps, what
    saliency methods hook), ``head`` pools/flattens and classifies to raw logits. Keeping the two
    apart lets training freeze the body, reset the head, or take features."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def backbone(self) -> nn.Module:
        """The part transfer learning freezes first: the whole body, unless a model narrows it to what it
        borrows from another network (seed 002's Monster: its stem)."""
        return self.features


class Scale(nn.Module):
    """Multiplies by a constant (airbench's logit scale)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def feature_shape(features: nn.Module, in_channels: int, image_size: tuple[int, int], model: str) -> torch.Size:
    """The C x h x w that ``features`` produces for one image, found by a dry run.

    A dry run rather than arithmetic keeps each constructor a plain list of layers; only use it on
    bodies without batch norm (a forward pass in training mode would update its running statistics).
    """
    try:
        with torch.no_grad():
            shape = features(torch.zeros(1, in_channels, *image_size)).shape[1:]
    except RuntimeError as e:
        raise UserError(f"image_size = {tuple(image_size)} is too small for model {model!r}") from e
    if shape.numel() == 0:
        raise UserError(f"image_size = {tuple(image_size)} is too small for model {model!r}")
    return shape


def check_widths(widths: Sequence[int], count: int, model: str) -> tuple[int, ...]:
    """``widths`` as a tuple of ``count`` positive ints (recipes give lists)."""
    widths = tuple(widths)
    if len(widths) != count or not all(isinstance(w, int) and w > 0 for w in widths):
        raise UserError(f"model {model!r} option widths = {list(widths)}: expected {count} positive integers")
    return widths


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, and back to the mode it was in afterwards (also on an error)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
