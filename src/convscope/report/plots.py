"""The figures of a run directory, drawn from its ``metrics.csv`` so they can be redrawn any time."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # no screen here or on most servers; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
import torch

from convscope.data.lab import unscale_lab
from convscope.engine.callbacks import Callback
from convscope.engine.task import FIGURES
from convscope.models.layers import eval_mode
from convscope.run import damaged, read_text, writing

if TYPE_CHECKING:
    from convscope.engine.trainer import Trainer


def read_metrics(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``metrics.csv`` -> {split: {column: values}}; empty cells become NaN."""
    rows: dict[str, list[dict[str, str]]] = {}
    try:
        for row in csv.DictReader(io.StringIO(read_text(path), newline="")):
            rows.setdefault(row["split"], []).append(row)
        return {split: _columns(split_rows) for split, split_rows in rows.items()}
    except (csv.Error, KeyError, ValueError, TypeError) as e:  # a cut or hand-edited table
        raise damaged(path, f"is not a convscope metrics table ({type(e).__name__}: {e})") from None


def _columns(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    out = {}
    for key in rows[0]:
        if key == "split":
            continue
        out[key] = np.array([float(r[key]) if r.get(key) not in (None, "") else math.nan for r in rows])
    return out


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` steps (seed 004's ``loss_avg``), defined from the first step."""
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (cumsum[idx] - cumsum[start]) / (idx - start)


def plot_training_history(metrics: dict[str, dict[str, np.ndarray]], path: Path, metric: str = "accuracy") -> None:
    """Loss and ``metric`` per step (raw and moving average) with the validation values per epoch."""
    train, valid = metrics["train"], metrics.get("valid", {})
    steps_per_epoch = max(1, int(np.sum(train["epoch"] == train["epoch"][0])))
    window = max(1, int(0.05 * steps_per_epoch))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name in zip(axes, ("loss", metric), strict=True):
        if name not in train:
            ax.set_visible(False)
            continue
        ax.plot(train["step"], train[name], alpha=0.3, color="C0")
        ax.plot(train["step"], moving_average(train[name], window), color="C0", label=f"train (avg of {window} steps)")
        if name in valid:
            ax.plot(valid["step"], valid[name], "o-", color="C1", label="valid (per epoch)")
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(linestyle="dashed", alpha=0.3)
        ax.legend()
    if metric in train:
        axes[1].set_ylim(0, 1)
    axes[0].set_ylim(0, float(np.nanmax(train["loss"])) * 1.05)
    fig.tight_layout()
    save_figure(fig, path)


def history_columns(rows: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """A trainer's history rows as :func:`read_metrics` gives one split: {column: values}, NaN where absent."""
    names = dict.fromkeys(name for row in rows for name in row)
    return {name: np.array([row.get(name, math.nan) for row in rows], dtype=float) for name in names}


class HistoryFigure(Callback):
    """Redraws ``RUN_DIR/plots/history.png`` from the trainer's history at each epoch end, for a logger to show
    (TensorBoard's images); ``plot_run`` draws the same figure once the run is over."""

    def __init__(self) -> None:
        self.drawn: dict[str, Path] = {}

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        if not trainer.is_main or trainer.run_dir is None:
            return
        history = trainer.history
        metrics = {"train": history_columns(history.train)}
        if history.valid:
            metrics["valid"] = history_columns(history.valid)
        path = trainer.run_dir / "plots" / "history.png"
        plot_training_history(metrics, path)
        self.drawn = {"history": path}

    def figures(self) -> dict[str, Path]:
        return self.drawn


def plot_schedule(metrics: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """Learning rate and momentum (SGD momentum or Adam beta1) per step."""
    train = metrics["train"]
    names = [n for n in ("lr", "momentum") if n in train and not np.all(np.isnan(train[n]))]
    if not names:
        return
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.8 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        ax.plot(train["step"], train[name], color="black", label=name)
        ax.grid(linestyle="dotted")
        ax.legend(loc="upper right")
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    save_figure(fig, path)


def plot_confusion_matrix(matrix: torch.Tensor, classes: list[str], path: Path) -> None:
    """Counts with row-normalised colour, true class on the rows."""
    counts = matrix.cpu().numpy()
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                colour = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(f"confusion matrix (accuracy {np.trace(counts) / max(counts.sum(), 1):.4f})")
    fig.tight_layout()
    save_figure(fig, path)


def plot_roc(roc: dict, path: Path) -> None:
    """ROC curves from ``eval.json``'s ``roc``: the positive class's for a binary task, one per class otherwise."""
    curves = roc["curves"]
    names = [roc["positive_class"]] if roc["kind"] == "binary" else list(curves)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name in names:
        if name in curves:
            ax.plot(curves[name]["fpr"], curves[name]["tpr"], label=f"{name} (AUC {roc['auc'][name]:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="dotted", color="grey", label="chance")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    macro = f", macro AUC {roc['auc_macro']:.3f}" if roc.get("auc_macro") is not None else ""
    ax.set_title(f"ROC ({roc['kind']}{macro})")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(linestyle="dashed", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_precision_recall(pr: dict, path: Path) -> None:
    """Precision-recall curves (one per class) from ``eval.json``'s ``precision_recall``."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, curve in pr["curves"].items():
        ax.plot(curve["recall"], curve["precision"], label=f"{name} (AP {pr['average_precision'][name]:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    mean_ap = pr.get("mean_average_precision")
    ax.set_title("precision-recall" + (f" (mean AP {mean_ap:.3f})" if mean_ap is not None else ""))
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(linestyle="dashed", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_colourisation(lab: torch.Tensor, ab_logits: torch.Tensor, path: Path) -> None:
    """Split-brain colours (seed 001): per image (columns) the truth, its L alone, and L with the ab the L -> ab
    half predicts (annealed mean of its classes). ``lab``: N x 3 x H x W unscaled Lab; ``ab_logits``: N x Q x h x w."""
    from convscope.data.lab import ab_from_logits, lab_to_rgb

    grey = lab.clone()
    grey[:, 1:] = 0
    predicted = torch.cat([lab[:, :1], ab_from_logits(ab_logits, tuple(lab.shape[-2:]))], dim=1)
    rows = [("truth", lab), ("L (input)", grey), ("predicted ab", predicted)]
    n = lab.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n + 1, 1.3 * len(rows)), squeeze=False)
    for r, (title, images) in enumerate(rows):
        rgb = lab_to_rgb(images).permute(0, 2, 3, 1).numpy()
        for c in range(n):
            axes[r, c].imshow(rgb[c])
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_run(run_dir: Path) -> list[Path]:
    """(Re)draw the training figures of a run into ``RUN_DIR/plots``."""
    metrics_path = run_dir / "metrics.csv"
    if not metrics_path.is_file():
        return []
    metrics = read_metrics(metrics_path)
    if "train" not in metrics:
        return []
    plots = run_dir / "plots"
    plot_training_history(metrics, plots / "history.png")
    plot_schedule(metrics, plots / "schedule.png")
    return sorted(plots.glob("*.png"))


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Write ``fig`` to ``path`` (a full disk is one error naming the file) and close it."""
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


FIGURE_IMAGES = 8


class ColourFigure(Callback):
    """After each epoch, ``plots/colours-epoch-N.png``: a few images (the first of the validation or test
    loader, the same every epoch), their L, and L with the ab the network predicts from it."""

    def __init__(self, folder: Path, loader: Any) -> None:
        self.folder = folder
        self.images = next(iter(loader))[0][:FIGURE_IMAGES]
        self.drawn: dict[str, Path] = {}

    def on_epoch_end(self, trainer: Any, row: dict[str, float]) -> None:
        if not trainer.is_main:
            return
        model = trainer.model
        with eval_mode(model), torch.no_grad():
            ab_logits, _ = model(self.images.to(trainer.device))
        path = self.folder / f"colours-epoch-{row['epoch']}.png"
        plot_colourisation(unscale_lab(self.images), ab_logits.float().cpu(), path)
        self.drawn = {"colours": path}

    def figures(self) -> dict[str, Path]:
        return self.drawn


@FIGURES.register("colours")
def _colour_figure(loaders: dict[str, Any], run_dir: Path, info: dict[str, Any]) -> ColourFigure:
    return ColourFigure(run_dir / "plots", loaders.get("valid") or loaders["test"])
