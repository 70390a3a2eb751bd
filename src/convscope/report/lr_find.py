"""The figure of ``convscope lr-find``: loss against a logarithmic lr axis, the suggestion marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen here or on most servers; must precede pyplot
import matplotlib.pyplot as plt

from convscope.engine.lr_find import RULE, LRFindResult
from convscope.report.plots import save_figure


def plot_lr_find(result: LRFindResult, path: Path, title: str = "") -> Path:
    """Raw losses (faint) and their smoothed curve against lr (log scale); the suggested lr and the smoothed
    minimum as vertical lines."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(result.lrs, result.losses, color="C0", alpha=0.25, linewidth=1, label="loss per step")
    ax.plot(result.lrs, result.smoothed, color="C0", linewidth=2, label="smoothed loss")
    low = result.minimum
    ax.axvline(result.lrs[low], color="grey", linestyle="dotted", label=f"smoothed minimum at {result.lrs[low]:.2g}")
    if result.suggestion_index is not None:
        i = result.suggestion_index
        ax.axvline(result.lrs[i], color="C3", linestyle="dashed", label=f"suggested {result.lrs[i]:.2g} ({RULE})")
        ax.plot(result.lrs[i], result.smoothed[i], "o", color="C3")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    # From the lowest loss seen up to the smoothed minimum to the highest smoothed value before it: what comes
    # after (the climb, a diverging step) leaves the top of the frame rather than flattening the descent.
    top = max(result.smoothed[: low + 1])
    bottom = min(min(result.losses[: low + 1]), result.smoothed[low])
    margin = 0.05 * (top - bottom) or 0.05 * abs(top) or 0.05
    ax.set_ylim(bottom - margin, top + margin)
    ax.set_title(title or "learning-rate range test")
    ax.grid(linestyle="dashed", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return path
