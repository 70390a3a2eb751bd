"""train.loggers = ["csv", "tensorboard"]: event files that TensorBoard reads back as metrics.csv has them,
with the per-epoch figures as images, each step once after a crash and a resume, phase 1 in its own folder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convscope.config import TransferConfig, load_recipe
from convscope.engine import OptimConfig, TrainConfig
from convscope.engine.finetune import train_in_phases
from convscope.engine.tensorboard import TensorBoardLogger
from convscope.errors import UserError
from convscope.report.plots import HistoryFigure

from . import helpers
from .helpers import Crash, CrashAt
from .test_finetune import toy_convnet

LOGGERS = ["csv", "tensorboard"]


def events(log_dir: Path) -> EventAccumulator:
    """What TensorBoard shows for ``log_dir``: every event file in it, purges applied."""
    assert any(log_dir.glob("events.out.tfevents.*")), f"no event file in {log_dir}"
    return EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0}).Reload()


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def csv_rows(run: Path, split: str) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as f:
        return [row for row in csv.DictReader(f) if row["split"] == split]


def as_float32(text: str) -> float:
    """TensorBoard stores scalars as float32: the csv's value rounded the same way."""
    return float(np.float32(float(text)))


def test_scalars_match_metrics_csv_and_the_history_figure_is_an_image(tmp_path: Path) -> None:
    run = tmp_path / "run"
    helpers.train_run(run, loggers=LOGGERS, callbacks=[HistoryFigure()])
    acc = events(run / "tensorboard")

    train, valid = csv_rows(run, "train"), csv_rows(run, "valid")
    assert len(train) == 18 and len(valid) == 3
    for tag, column in [("train/loss", "loss"), ("train/accuracy", "accuracy"), ("schedule/lr", "lr")]:
        assert scalars(acc, tag) == [(int(r["step"]), as_float32(r[column])) for r in train], tag
    assert len({value for _, value in scalars(acc, "schedule/lr")}) > 1  # onecycle: the lr moves
    assert scalars(acc, "valid/accuracy") == [(int(r["step"]), as_float32(r["accuracy"])) for r in valid]
    assert [step for step, _ in scalars(acc, "train_epoch/loss")] == [6, 12, 18]
    assert not [tag for tag in acc.Tags()["scalars"] if tag.endswith("_avg")]  # TensorBoard smooths on its own

    images = acc.Images("figures/history")
    assert [image.step for image in images] == [6, 12, 18]
    assert images[-1].width > 100 and images[-1].height > 100
    assert (run / "plots" / "history.png").is_file()


@pytest.mark.parametrize("flushed", [True, False], ids=["written-after-checkpoint", "buffered"])
def test_a_resumed_run_has_each_step_once(tmp_path: Path, flushed: bool) -> None:
    run = tmp_path / "run"
    crash = FlushThenCrashAt(11) if flushed else CrashAt(11)
    with pytest.raises(Crash):
        helpers.train_run(run, loggers=LOGGERS, checkpoint_every=4, callbacks=[crash])
    # Everything up to the checkpoint at step 8 is on disk (the logger flushes as the trainer checkpoints).
    before = [step for step, _ in scalars(events(run / "tensorboard"), "train/loss")]
    assert before[:8] == list(range(1, 9))
    if flushed:  # the steps the killed run wrote after its checkpoint, which the resumed run replays
        assert before == list(range(1, 12))

    helpers.train_run(run, resume=True, loggers=LOGGERS, checkpoint_every=4)
    acc = events(run / "tensorboard")
    train = csv_rows(run, "train")
    assert scalars(acc, "train/loss") == [(int(r["step"]), as_float32(r["loss"])) for r in train]
    assert [step for step, _ in scalars(acc, "train/loss")] == list(range(1, 19))
    assert [step for step, _ in scalars(acc, "valid/accuracy")] == [6, 12, 18]


class FlushThenCrashAt(CrashAt):
    """A crash after the writer's own periodic flush put the latest steps on disk."""

    order = TensorBoardLogger.order + 1

    def on_train_batch_end(self, trainer, logs) -> None:
        if trainer.global_step == self.step:
            logger = next(c for c in trainer.callbacks if isinstance(c, TensorBoardLogger))
            logger.writer.flush()
        super().on_train_batch_end(trainer, logs)


def test_two_phase_transfer_logs_phase_one_beside_its_metrics(tmp_path: Path) -> None:
    train_loader, valid_loader = helpers.loaders()
    with helpers.one_thread():
        train_in_phases(
            toy_convnet(), helpers.ToyTask(), OptimConfig(name="sgd", lr=0.05),
            TrainConfig(epochs=3, device="cpu", quiet=True, loggers=LOGGERS), TransferConfig(freeze_epochs=1),
            run_dir=tmp_path, train_loader=train_loader, valid_loader=valid_loader, say=lambda _: None,
        )  # fmt: skip
    phase1 = scalars(events(tmp_path / "phase1" / "tensorboard"), "train/loss")
    phase2 = scalars(events(tmp_path / "tensorboard"), "train/loss")
    assert [step for step, _ in phase1] == list(range(1, 7))  # the steps of phase1/metrics.csv
    assert [step for step, _ in phase2] == list(range(1, 13))
    assert phase2[-1][1] == as_float32(csv_rows(tmp_path, "train")[-1]["loss"])


def test_csv_only_writes_no_event_files(tmp_path: Path) -> None:
    helpers.train_run(tmp_path / "run", epochs=1)
    assert (tmp_path / "run" / "metrics.csv").is_file()
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_an_unknown_logger_is_named() -> None:
    with pytest.raises(UserError, match=r"train\.loggers = 'wandb' is not one of: csv, tensorboard"):
        TrainConfig(loggers=["csv", "wandb"])
    with pytest.raises(UserError, match=r"train\.loggers = 'tensorbord'"):
        load_recipe("fashion-mnist", {"train.loggers": '["csv", "tensorbord"]'})
    with pytest.raises(UserError, match="expected a list"):
        TrainConfig(loggers="tensorboard")
    assert load_recipe("fashion-mnist", {"train.loggers": '["csv","tensorboard"]'}).train.loggers == LOGGERS
