"""Seed 000's pictures of what a class-map model decided where: the HSV rendering (hue = the argmax class,
saturation = the attention, value = the grey input), the per-epoch grid with a legend naming the classes, and
the palette PNG of a class mask."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.colors import hsv_to_rgb
from matplotlib.patches import Patch
from PIL import Image
from torchvision.utils import make_grid

from convscope.engine.callbacks import Callback
from convscope.engine.task import FIGURES
from convscope.models.layers import eval_mode
from convscope.report.plots import plt, save_figure
from convscope.run import writing

GRID_IMAGES = 32  # two rows of 16
GRID_ROW = 16


def class_hues(num_classes: int) -> np.ndarray:
    """Seed 000's hue of class c: (c + 0.5) / C."""
    return (np.arange(num_classes) + 0.5) / num_classes


def class_colours(num_classes: int) -> np.ndarray:
    """C x 3 RGB in [0, 1]: each class's hue at full saturation and value (the legend, the palette)."""
    hues = class_hues(num_classes)
    return hsv_to_rgb(np.stack([hues, np.ones_like(hues), np.ones_like(hues)], axis=1))


def grey(x: torch.Tensor) -> torch.Tensor:
    """N x H x W in [0, 1]: the mean over channels, stretched to each image's own range (seed 000's value)."""
    g = x.float().mean(dim=1)
    low = g.amin(dim=(1, 2), keepdim=True)
    return (g - low) / (g.amax(dim=(1, 2), keepdim=True) - low).clamp(min=1e-6)


def hsv_rendering(classes: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor, num_classes: int) -> np.ndarray:
    """N x H x W x 3 RGB: hue from the class index (N x H x W), saturation and value in [0, 1]."""
    hue = (classes.float() + 0.5) / num_classes
    return hsv_to_rgb(torch.stack([hue, saturation.float().clamp(0, 1), value.float()], dim=-1).cpu().numpy())


def plot_hsv_grid(x: torch.Tensor, maps: torch.Tensor, classes: list[str], path: Path, title: str) -> None:
    """Seed 000's figure: the inputs, their HSV rendering and the attention maps, rows of ``GRID_ROW``."""
    from convscope.tasks.weakseg import attention

    maps = torch.nn.functional.interpolate(maps.float(), size=tuple(x.shape[-2:]), mode="bilinear")
    attn, value = attention(maps), grey(x)
    rendered = torch.from_numpy(hsv_rendering(maps.argmax(dim=1), attn, value, len(classes))).permute(0, 3, 1, 2)
    rows = [make_grid(part, nrow=GRID_ROW, padding=1, pad_value=1.0) for part in
            (value[:, None].expand(-1, 3, -1, -1), rendered, attn[:, None].expand(-1, 3, -1, -1))]  # fmt: skip
    picture = torch.cat(rows, dim=1).permute(1, 2, 0).cpu().numpy()
    fig, ax = plt.subplots(figsize=(12, 12 * picture.shape[0] / picture.shape[1] + 1.2))
    ax.imshow(picture)
    ax.set_xticks([])
    ax.set_yticks([rows[0].shape[1] * (i + 0.5) for i in range(3)], ["input", "class (hue) x attention", "attention"])
    ax.set_title(title)
    handles = [
        Patch(color=colour, label=name) for colour, name in zip(class_colours(len(classes)), classes, strict=True)
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=min(len(classes), 5), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def save_palette_png(mask: torch.Tensor, num_classes: int, path: Path) -> None:
    """A class mask (H x W: 0 background, c + 1 class c) as a palette PNG: black background, the class colours."""
    palette = np.zeros((256, 3), np.uint8)
    palette[1 : num_classes + 1] = np.round(class_colours(num_classes) * 255).astype(np.uint8)
    image = Image.fromarray(mask.to(torch.uint8).cpu().numpy(), mode="P")
    image.putpalette(palette.flatten().tolist())
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)


class HsvGridCallback(Callback):
    """After each epoch, ``hsv-epoch-NN.png`` in ``folder`` for ``GRID_IMAGES`` images spread over ``loader``'s data."""

    def __init__(self, loader: Any, info: dict[str, Any], folder: Path) -> None:
        self.loader, self.classes, self.folder = loader, info["classes"], folder
        self.dataset = info["dataset"]
        self.drawn: dict[str, Path] = {}

    def on_epoch_end(self, trainer: Any, row: dict[str, float]) -> None:
        if not trainer.is_main:
            return
        x = self.loader.spread(GRID_IMAGES)[0]
        model = trainer.model
        with eval_mode(model), torch.inference_mode(), trainer._autocast():
            maps = model(x)
        accuracy = row.get("accuracy")
        shown = f", valid accuracy {accuracy:.3f}" if accuracy is not None else ""
        epoch = int(row["epoch"])
        title = f"{self.dataset} epoch {epoch:02d}{shown}"
        path = self.folder / f"hsv-epoch-{epoch:02d}.png"
        plot_hsv_grid(x, maps, self.classes, path, title)
        self.drawn = {"hsv_grid": path}

    def figures(self) -> dict[str, Path]:
        return self.drawn


@FIGURES.register("hsv-grid")
def _hsv_grid(loaders: dict[str, Any], run_dir: Path, info: dict[str, Any]) -> HsvGridCallback:
    return HsvGridCallback(loaders.get("valid") or loaders["test"], info, run_dir / "plots")


def plot_threshold_sweep(rule: str, sweep: list[dict[str, float]], chosen: dict[str, float], path: Path) -> None:
    """Valid mean IoU against the rule's threshold, one line per value of its other parameter (CAM's class
    threshold), the chosen setting marked: the curve ReCAM's users draw by hand to pick a background threshold."""
    keys = [k for k in sweep[0] if k != "valid_mean_iou"]
    x_key = max(keys, key=lambda k: len({row[k] for row in sweep}))  # the parameter swept most finely
    other = [k for k in keys if k != x_key]
    fig, ax = plt.subplots(figsize=(6, 4))
    for value in sorted({tuple(row[k] for k in other) for row in sweep}):
        rows = [row for row in sweep if tuple(row[k] for k in other) == value]
        label = ", ".join(f"{k} {v:g}" for k, v in zip(other, value, strict=True)) or None
        ax.plot([row[x_key] for row in rows], [row["valid_mean_iou"] for row in rows], marker=".", label=label)
    best = next(row for row in sweep if all(row[k] == chosen[k] for k in keys))
    ax.plot([best[x_key]], [best["valid_mean_iou"]], "k*", markersize=12, label=f"chosen: {best['valid_mean_iou']:.3f}")
    ax.set(
        xlabel=x_key.replace("_", " "), ylabel="mean IoU on the valid scenes", title=f"{rule} masks: threshold sweep"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_run_hsv_grid(run: Any, path: Path) -> None:
    """Seed 000's picture for a trained run: ``GRID_IMAGES`` test images spread over its test set, final model."""
    loader = run.modality.evaluation_loader(run.recipe, run.info, run.recipe.data.name, run.device)
    x = loader.spread(GRID_IMAGES)[0]
    run.model.eval()
    with torch.inference_mode():
        maps = run.model(x)
    plot_hsv_grid(x, maps, run.classes, path, f"{run.info['dataset']} test images, final model")
