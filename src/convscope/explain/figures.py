"""Explanation figures: image, map and overlay per input (seed 004's guided-backprop figure), and the
feature maps of every layer (seed 004's feature-map figure)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen here or on most servers; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import LinearSegmentedColormap

from convscope.errors import UserError
from convscope.explain.methods import Stage
from convscope.run import writing

# Seed 004 shows the standardised map clipped to [0.5, 10]: everything below the map's mean is dropped.
_MAP_MIN, _MAP_MAX = 0.5, 10.0
_DIVERGING = LinearSegmentedColormap.from_list("red-white-blue", ["red", "white", "blue"])
_CHANNELS_SHOWN = 5  # per convolutional layer, the most active ones for the image


@dataclass(frozen=True)
class Display:
    """How a map is drawn: seed 004's standardise-and-clip, and the overlay's opacity."""

    saturation: float = 0.1  # the standardised map is multiplied by this: larger shows more contrast
    brightness: float = 0.5  # ... then shifted by this: larger shows more of the map
    alpha: float = 0.75  # opacity of the map over the image

    def __post_init__(self) -> None:
        if not self.saturation > 0:
            raise UserError(f"--saturation {self.saturation}: expected a positive number (seed 004 uses 0.1)")
        if not 0 <= self.alpha <= 1:
            raise UserError(f"--alpha {self.alpha}: expected an opacity between 0 and 1")


def standardize_and_clip(
    x: torch.Tensor, min_val: float = 0.0, max_val: float = 1.0, saturation: float = 0.1, brightness: float = 0.5
) -> torch.Tensor:
    """Seed 004: standardise to mean 0 and std 1, scale by ``saturation``, shift by ``brightness``, clip."""
    x = x.detach().float().cpu()
    std = max(x.std().item(), 1e-7) if x.numel() > 1 else 1.0
    return x.sub(x.mean()).div(std).mul(saturation).add(brightness).clamp(min_val, max_val)


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Model-ready N x C x H x W back to pixel values in [0, 1] (the run's normalisation undone)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1)


def show_image(ax: plt.Axes, image: torch.Tensor) -> None:
    """A C x H x W image in [0, 1]."""
    image = image.detach().float().cpu()
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())
    ax.axis("off")


def explanation_figure(
    images: torch.Tensor, maps: torch.Tensor, titles: Sequence[str], method: str, display: Display | None = None
) -> plt.Figure:
    """One row per input: the image (titled with the class and its probability), the map, the overlay.

    ``images`` N x C x H x W in [0, 1], ``maps`` N x H x W.
    """
    display = display or Display()
    rows = len(images)
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.6 * rows), squeeze=False)
    for row in range(rows):
        shown = standardize_and_clip(maps[row], _MAP_MIN, _MAP_MAX, display.saturation, display.brightness).numpy()
        show_image(axes[row, 0], images[row])
        axes[row, 0].set_title(titles[row], fontsize=8)
        axes[row, 1].imshow(shown, cmap="viridis")
        axes[row, 1].set_title(method, fontsize=8)
        axes[row, 1].axis("off")
        show_image(axes[row, 2], images[row])
        axes[row, 2].imshow(shown, cmap="viridis", alpha=display.alpha)
        axes[row, 2].set_title("overlay", fontsize=8)
    fig.tight_layout()
    return fig


def comparison_figure(
    images: torch.Tensor, maps: dict[str, torch.Tensor], titles: Sequence[str], display: Display | None = None
) -> plt.Figure:
    """One row per input: the image, then each method's map over it, so the methods can be told apart."""
    display = display or Display()
    rows, cols = len(images), 1 + len(maps)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.2 * rows), squeeze=False)
    for row in range(rows):
        show_image(axes[row, 0], images[row])
        axes[row, 0].set_title(titles[row], fontsize=7)
        for col, (method, method_maps) in enumerate(maps.items(), start=1):
            shown = standardize_and_clip(method_maps[row], _MAP_MIN, _MAP_MAX, display.saturation, display.brightness)
            show_image(axes[row, col], images[row])
            axes[row, col].imshow(shown.numpy(), cmap="viridis", alpha=display.alpha)
            axes[row, col].set_title(method, fontsize=7)
    fig.tight_layout()
    return fig


def feature_maps_figure(
    images: torch.Tensor, stages: Sequence[Sequence[Stage]], probabilities: torch.Tensor, classes: Sequence[str]
) -> plt.Figure:
    """Per input: the image, a few channels of each convolutional layer, the dense layers as columns
    (red negative, blue positive, the last one annotated) and the class probabilities."""
    maps_width = max(sum(s.output.dim() == 3 and s.output.shape[-1] > 1 for s in st) for st in stages)
    vectors = max(len(st) for st in stages) - maps_width
    fig = plt.figure(figsize=(1.3 * (maps_width + 3) + 0.7 * vectors, 3.2 * len(images)), layout="constrained")
    subfigures = np.atleast_1d(fig.subfigures(len(images), 1))
    for sub, image, image_stages, probs in zip(subfigures, images, stages, probabilities, strict=True):
        _feature_maps_row(sub, image, image_stages, probs, classes)
    return fig


def _feature_maps_row(
    fig: matplotlib.figure.SubFigure,
    image: torch.Tensor,
    stages: Sequence[Stage],
    probs: torch.Tensor,
    classes: Sequence[str],
) -> None:
    spatial = [s for s in stages if s.output.dim() == 3 and s.output.shape[-1] > 1]
    flat = [s for s in stages if s not in spatial]
    ratios = [1.0] + [1.0] * len(spatial) + [0.6] * len(flat) + [1.6]
    grid = fig.add_gridspec(_CHANNELS_SHOWN, len(ratios), width_ratios=ratios)
    ax = fig.add_subplot(grid[:, 0])
    show_image(ax, image)
    ax.set_title("input", fontsize=8)
    for col, stage in enumerate(spatial, start=1):
        out = stage.output.float().cpu()
        strongest = out.abs().mean(dim=(1, 2)).argsort(descending=True)[:_CHANNELS_SHOWN]
        for row, channel in enumerate(strongest.tolist()):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(out[channel].numpy(), cmap="Greys")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(f"{stage.kind}\n{stage.name}", fontsize=7)
    for col, stage in enumerate(flat, start=1 + len(spatial)):
        values = stage.output.float().cpu().flatten().numpy()
        last = col == len(ratios) - 2
        width = 1 if last else max(1, math.ceil(len(values) / 32))
        column = np.full(math.ceil(len(values) / width) * width, np.nan)
        column[: len(values)] = values
        column = column.reshape(-1, width)
        bound = float(np.nanmax(np.abs(column))) or 1.0
        ax = fig.add_subplot(grid[:, col])
        ax.imshow(column, cmap=_DIVERGING, vmin=-bound, vmax=bound, aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{stage.kind}\n{stage.name}", fontsize=7)
        if last and len(values) <= 20:
            for i, value in enumerate(values):
                ax.text(0, i, f"{value:.2f}", ha="center", va="center", fontsize=6)
    ax = fig.add_subplot(grid[:, -1])
    order = np.arange(len(classes))
    ax.barh(order, probs.float().cpu().numpy(), color="C0")
    ax.set_yticks(order, classes, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title("probability", fontsize=8)


def save_figure(fig: plt.Figure, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` and close it; a full disk is one error naming the file."""
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def figure_png(fig: plt.Figure) -> bytes:
    """The figure as PNG bytes (for embedding in a page), closed afterwards."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
