import pytest

from convscope.engine import Callback, EarlyStopping, ScheduleTracker, StopTraining, Trainer, load_checkpoint
from convscope.errors import UserError

from .helpers import loaders, make_trainer, train_run


def _feed(stopper: EarlyStopping, values: list[float]) -> int:
    """Epochs run until the stopper fires (len(values) if it never does)."""
    for epoch, value in enumerate(values, start=1):
        try:
            stopper.on_validation_end(None, {"accuracy": value, "loss": -value})
        except StopTraining:
            return epoch
    return len(values)


def test_first_drop_rule_stops_at_first_drop():
    assert _feed(EarlyStopping("accuracy", "max", "first-drop"), [0.5, 0.6, 0.6, 0.55, 0.7]) == 4
    assert _feed(EarlyStopping("loss", "min", "first-drop"), [0.5, 0.6, 0.7, 0.65]) == 4


def test_seed001_is_still_read_as_first_drop():
    from convscope.config import TrainConfig

    assert EarlyStopping("accuracy", "max", "seed001").rule == "first-drop"
    assert TrainConfig(early_stopping="seed001").early_stopping == "first-drop"


def test_seed001_rule_stops_at_first_drop():
    assert _feed(EarlyStopping("accuracy", "max", "seed001"), [0.5, 0.6, 0.6, 0.55, 0.7]) == 4
    assert _feed(EarlyStopping("loss", "min", "seed001"), [0.5, 0.6, 0.7, 0.65]) == 4


def test_patience_rule_counts_epochs_without_improvement():
    assert _feed(EarlyStopping("accuracy", "max", "patience", patience=2), [0.5, 0.6, 0.55, 0.59, 0.9]) == 4
    assert _feed(EarlyStopping("accuracy", "max", "patience", patience=2), [0.5, 0.6, 0.55, 0.61, 0.6]) == 5


def test_unknown_monitor_is_a_user_error():
    with pytest.raises(UserError, match=r"train.monitor = 'f1'.*one of: loss, accuracy"):
        EarlyStopping("f1").on_validation_end(None, {"loss": 1.0, "accuracy": 0.5})


class Recorder(Callback):
    def __init__(self, name: str, order: int, log: list[str]) -> None:
        self.name, self.order, self.log = name, order, log

    def on_fit_start(self, trainer) -> None:
        self.log.append(self.name)


def test_callbacks_run_in_order():
    log: list[str] = []
    trainer = make_trainer(callbacks=[Recorder("late", 10, log), Recorder("early", -1, log)], epochs=1)
    trainer.fit(*loaders())
    assert log == ["early", "late"]


@pytest.mark.parametrize(("rule", "epochs_run"), [("seed001", 2), ("patience", 3)])
def test_early_stopping_through_trainer_writes_final_checkpoint(tmp_path, monkeypatch, rule, epochs_run):
    # Validation accuracy scripted so both rules have something to react to.
    scripted = iter([0.6, 0.5, 0.4, 0.3, 0.2])
    real_evaluate = Trainer.evaluate

    def scripted_evaluate(self, loader):
        return {**real_evaluate(self, loader), "accuracy": next(scripted)}

    monkeypatch.setattr(Trainer, "evaluate", scripted_evaluate)
    trainer = train_run(tmp_path / "run", epochs=5, early_stopping=rule, patience=2)
    assert len(trainer.history.valid) == epochs_run
    assert trainer.history.best["accuracy"] == 0.6
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["stopped"] is True
    assert state["epoch"] == epochs_run
    assert state["callbacks"]["EarlyStopping"]["previous"] == [0.6, 0.5, 0.4][epochs_run - 1]
    # Resuming a run that stopped early changes nothing.
    again = train_run(tmp_path / "run", resume=True, epochs=5, early_stopping=rule, patience=2)
    assert again.global_step == trainer.global_step


def test_stop_mid_epoch(tmp_path):
    class StopAt(Callback):
        def on_train_batch_end(self, trainer, logs) -> None:
            if trainer.global_step == 4:
                raise StopTraining("enough")

    trainer = train_run(tmp_path / "run", callbacks=[StopAt()])
    assert trainer.global_step == 4 and trainer.history.valid == []
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert (state["epoch"], state["batch"], state["stopped"]) == (0, 4, True)


def test_schedule_tracker_records_what_each_step_used(tmp_path):
    tracker = ScheduleTracker()
    trainer = train_run(tmp_path / "run", callbacks=[tracker])
    assert tracker.lr == [row["lr"] for row in trainer.history.train]
    assert tracker.momentum == [row["momentum"] for row in trainer.history.train]
    assert tracker.lr[0] == pytest.approx(0.05 / 25)  # OneCycle starts at lr / div_factor
    assert tracker.momentum[0] == pytest.approx(0.95)
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["callbacks"]["ScheduleTracker"]
    restored = ScheduleTracker()
    restored.load_state_dict(saved)
    assert restored.lr == tracker.lr
