import csv
import io
import sys

import pytest
import torch

from convscope.engine import OptimConfig, TrainConfig, Trainer, load_checkpoint
from convscope.engine import trainer as trainer_module
from convscope.errors import UserError

from .helpers import Sleep, ToyTask, loaders, make_trainer, tiny_model, train_run

TIMING = {"seconds"}  # wall-clock columns: differ between any two runs


def _csv(path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def test_fit_writes_history_checkpoints_and_metrics_csv(tmp_path):
    run = tmp_path / "run"
    trainer = train_run(run)
    history = trainer.history
    assert len(history.train) == 18 and len(history.valid) == 3
    assert list(history.train[0]) == [
        "epoch", "step", "loss", "accuracy", "loss_avg", "accuracy_avg", "lr", "momentum"
    ]  # fmt: skip
    assert list(history.valid[0]) == ["epoch", "step", "loss", "accuracy", "train_loss", "train_accuracy", "seconds"]
    assert [r["step"] for r in history.valid] == [6, 12, 18]
    assert history.train_seconds > 0
    assert history.best["accuracy"] == max(r["accuracy"] for r in history.valid)
    assert history.valid[-1]["loss"] < history.valid[0]["loss"]  # it learns

    rows = _csv(run / "metrics.csv")
    assert list(rows[0])[:3] == ["split", "epoch", "step"]
    assert [r["split"] for r in rows] == ["train"] * 18 + ["valid"] * 3
    assert float(rows[5]["loss"]) == history.train[5]["loss"]  # exact, not rounded
    assert rows[0]["train_loss"] == "" and rows[-1]["lr"] == ""

    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (last["epoch"], last["batch"], last["global_step"]) == (3, 0, 18)
    assert last["history"]["valid"] == history.valid
    assert last["config"]["optim"]["scheduler"] == "onecycle"
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["metrics"] == history.best


def test_train_averages_are_weighted_by_samples(tmp_path):
    trainer = make_trainer(epochs=1)
    train_loader, valid_loader = loaders(batch_size=40)  # 96 samples: batches of 40, 40, 16
    trainer.fit(train_loader, valid_loader)
    rows, epoch = trainer.history.train, trainer.history.valid[0]
    expected = (rows[0]["loss"] * 40 + rows[1]["loss"] * 40 + rows[2]["loss"] * 16) / 96
    assert epoch["train_loss"] == pytest.approx(expected)


def test_moving_average_window(tmp_path):
    trainer = make_trainer(epochs=1, window=3)
    trainer.fit(*loaders())
    losses = [r["loss"] for r in trainer.history.train]
    assert trainer.history.train[4]["loss_avg"] == pytest.approx(sum(losses[2:5]) / 3)
    assert trainer.history.train[0]["loss_avg"] == losses[0]


def test_evaluate_uses_eval_mode_and_restores_it():
    trainer = make_trainer()
    _, valid = loaders()
    trainer.model.train()
    first = trainer.evaluate(valid)
    assert list(first) == ["loss", "accuracy"]
    assert first == trainer.evaluate(valid)  # dropout off: the same twice
    assert trainer.model.training


class Probe(ToyTask):
    """Records what the training step saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[torch.dtype, bool, bool]] = []

    def training_step(self, model, batch):
        x, _ = batch
        logits = model(x)
        self.seen.append((logits.dtype, x.is_contiguous(memory_format=torch.channels_last), torch.is_grad_enabled()))
        return super().training_step(model, batch)


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_precision_and_memory_format(precision, dtype, channels_last):
    task = Probe()
    cfg = TrainConfig(epochs=1, device="cpu", quiet=True, precision=precision, channels_last=channels_last)
    trainer = Trainer(tiny_model(), task, OptimConfig(), cfg)
    trainer.fit(*loaders())
    assert task.seen and all(s == (dtype, channels_last, True) for s in task.seen)
    conv = trainer.model[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in trainer.history.train)


def test_grad_clip_and_deterministic_leave_no_global_state():
    before = torch.are_deterministic_algorithms_enabled()
    trainer = make_trainer(epochs=1, grad_clip=0.01, deterministic=True)
    trainer.fit(*loaders())
    assert torch.are_deterministic_algorithms_enabled() == before


def test_same_seed_same_run_different_seed_different_run():
    def losses(seed: int) -> list[float]:
        trainer = make_trainer(epochs=1, seed=seed)
        trainer.fit(*loaders())
        return [r["loss"] for r in trainer.history.train]

    assert losses(0) == losses(0)
    assert losses(0) != losses(1)  # dropout draws from the seeded global RNG


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(UserError) as e:
        make_trainer(tmp_path / "run").fit(*loaders(), resume=True)
    assert str(e.value) == f"--resume: no checkpoint in {tmp_path / 'run' / 'checkpoints'}"


def test_fresh_fit_refuses_to_overwrite_a_run(tmp_path):
    train_run(tmp_path / "run", epochs=1)
    with pytest.raises(UserError, match=r"already holds a run; pass --resume"):
        train_run(tmp_path / "run", epochs=1)


def test_resume_with_other_optimiser_settings_is_refused(tmp_path):
    train_run(tmp_path / "run", epochs=1)
    trainer = make_trainer(tmp_path / "run", optim=OptimConfig(name="sgd", lr=0.1, scheduler="onecycle"), epochs=1)
    with pytest.raises(UserError, match=r"optim.lr 0.05 -> 0.1"):
        trainer.fit(*loaders(), resume=True)


def test_resume_can_extend_a_run_without_schedule(tmp_path):
    optim = OptimConfig(name="sgd", lr=0.05)
    trainer = make_trainer(tmp_path / "run", optim=optim, epochs=1)
    trainer.fit(*loaders())
    longer = make_trainer(tmp_path / "run", optim=optim, epochs=2)
    longer.fit(*loaders(), resume=True)
    assert longer.global_step == 12 and len(longer.history.valid) == 2


def test_load_best(tmp_path):
    trainer = train_run(tmp_path / "run")
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    trainer.load_best()
    assert all(torch.equal(v, best["model"][k]) for k, v in trainer.model.state_dict().items())


def test_checkpoint_extra_is_saved(tmp_path):
    cfg = TrainConfig(epochs=1, device="cpu", quiet=True)
    extra = {"model": "tiny", "classes": ["a", "b", "c"], "recipe": {"train": {"epochs": 1}}}
    trainer = Trainer(tiny_model(), ToyTask(), OptimConfig(), cfg, run_dir=tmp_path, checkpoint_extra=extra)
    trainer.fit(*loaders())
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["extra"] == extra
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["extra"] == extra


def test_quiet_prints_one_line_per_epoch(capsys):
    make_trainer(epochs=2, quiet=True, log_every=2).fit(*loaders())
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[Epoch: 1/2] loss: ")
    assert " accuracy: " in lines[0] and " val_loss: " in lines[0] and " val_accuracy: " in lines[0]
    assert lines[0].endswith(" s)")
    assert out.err == ""


def test_log_file_gets_plain_step_lines_instead_of_a_bar(capsys):
    make_trainer(epochs=2, quiet=False, log_every=4).fit(*loaders())
    out = capsys.readouterr()
    lines = out.out.splitlines()
    steps = [line for line in lines if " step " in line]
    expected = ["[Epoch: 1/2 step 4/6", "[Epoch: 2/2 step 2/6", "[Epoch: 2/2 step 6/6"]
    assert [line.split("]")[0] for line in steps] == expected
    assert "loss: " in steps[0] and "lr: " in steps[0]
    assert sum(line.startswith("[Epoch: ") and " step " not in line for line in lines) == 2
    assert out.err == ""  # no bar when stderr is not a terminal


def test_epoch_number_is_padded_to_the_width_of_epochs(capsys):
    make_trainer(epochs=10, quiet=True).fit(*loaders(batch_size=96))
    assert capsys.readouterr().out.splitlines()[0].startswith("[Epoch: 01/10] ")


def test_other_ranks_neither_print_nor_write(tmp_path, capsys, monkeypatch):
    # Rank 1; the world size stays 1 so that no process group is needed (test_distributed runs 2 real ranks).
    monkeypatch.setattr(trainer_module, "rank_and_world_size", lambda: (1, 1))
    train_run(tmp_path / "run", epochs=1)
    assert capsys.readouterr().out == ""
    assert not (tmp_path / "run").exists()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_bar_and_no_step_lines(capsys, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    # Slow enough for tqdm to redraw (it draws at most every 0.1 s).
    make_trainer(epochs=2, quiet=False, log_every=1, callbacks=[Sleep(0.03)]).fit(*loaders())
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(" step " not in line for line in lines)
    bar = terminal.getvalue()
    assert "Epoch 1/2" in bar and "Epoch 2/2" in bar and "step/s" in bar
    assert "loss=" in bar and "accuracy=" in bar and "lr=" in bar


def test_unknown_monitor_fails_before_training():
    trainer = make_trainer(monitor="f1")
    with pytest.raises(UserError, match=r"train.monitor = 'f1' is not a validation metric; one of: loss, accuracy"):
        trainer.fit(*loaders())
    assert trainer.global_step == 0
