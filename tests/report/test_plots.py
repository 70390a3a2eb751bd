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
