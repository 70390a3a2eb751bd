import csv
from pathlib import Path

import numpy as np
import torch

from convscope.report.plots import moving_average, plot_confusion_matrix, plot_run, read_metrics


def test_moving_average_is_a_trailing_mean():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(moving_average(values, 2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(moving_average(values, 10), [1.0, 1.5, 2.0, 2.5])


def _write_metrics(path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "epoch", "step", "loss", "accuracy", "lr", "momentum"])
        for step in range(1, 21):
            writer.writerow(["train", (step - 1) // 10 + 1, step, 2.0 / step, step / 20, 0.01 * step, 0.9])
        writer.writerow(["valid", 1, 10, 0.5, 0.6, "", ""])
        writer.writerow(["valid", 2, 20, 0.4, 0.7, "", ""])


def test_plot_run_draws_history_and_schedule(tmp_path: Path):
    _write_metrics(tmp_path / "metrics.csv")
    metrics = read_metrics(tmp_path / "metrics.csv")
    assert metrics["valid"]["accuracy"].tolist() == [0.6, 0.7]
    assert np.isnan(metrics["valid"]["lr"]).all()
    paths = plot_run(tmp_path)
    assert {p.name for p in paths} == {"history.png", "schedule.png"}
    assert all(p.stat().st_size > 1000 for p in paths)


def test_confusion_matrix_plot(tmp_path: Path):
    out = tmp_path / "plots" / "cm.png"
    plot_confusion_matrix(torch.tensor([[5, 1], [2, 7]]), ["cat", "dog"], out)
    assert out.stat().st_size > 1000


def _captured(monkeypatch) -> list:
    figures = []
    monkeypatch.setattr("convscope.report.plots.save_figure", lambda fig, path: figures.append(fig))
    return figures


def test_roc_plot_draws_the_positive_class_for_binary_and_every_class_otherwise(monkeypatch, tmp_path: Path):
    from convscope.report.plots import plot_roc

    curve = {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.8, 1.0]}
    binary = {"kind": "binary", "positive_class": "yes", "auc": {"no": 0.7, "yes": 0.7}, "auc_macro": 0.7,
              "curves": {"no": curve, "yes": curve}}  # fmt: skip
    multi = {"kind": "one-vs-rest", "auc": {"a": 0.7, "b": 0.6, "c": None}, "auc_macro": 0.65,
             "curves": {"a": curve, "b": curve}}  # fmt: skip
    figures = _captured(monkeypatch)
    plot_roc(binary, tmp_path / "roc.png")
    plot_roc(multi, tmp_path / "roc.png")
    labels = [[line.get_label() for line in fig.axes[0].lines] for fig in figures]
    assert labels == [["yes (AUC 0.700)", "chance"], ["a (AUC 0.700)", "b (AUC 0.600)", "chance"]]


def test_precision_recall_plot_writes_a_file(tmp_path: Path):
    from convscope.report.plots import plot_precision_recall

    pr = {"average_precision": {"a": 0.9}, "mean_average_precision": 0.9,
          "curves": {"a": {"recall": [1.0, 0.5, 0.0], "precision": [0.5, 0.8, 1.0]}}}  # fmt: skip
    plot_precision_recall(pr, tmp_path / "pr.png")
    assert (tmp_path / "pr.png").stat().st_size > 1000
