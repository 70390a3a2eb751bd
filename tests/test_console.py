"""What a log file shows of long work: a line at least every so many seconds, nothing for short work."""

from __future__ import annotations

from convscope import console
from convscope.engine import progress
from tests.engine.helpers import loaders, make_trainer


def test_a_long_stage_says_how_far_it_is(monkeypatch, capsys):
    monkeypatch.setattr(console, "LINE_SECONDS", 0.0)
    with console.Stage("CRF search", 3, unit="settings") as stage:
        for _ in range(3):
            stage.advance()
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"CRF search: {i}/3 settings (0 s)" for i in (1, 2, 3)]  # the last count once


def test_a_short_stage_prints_nothing(capsys):
    with console.Stage("decoding 3 images", 3) as stage:
        stage.advance(3)
    assert capsys.readouterr().out == ""


def test_notes_go_to_stderr(capsys):
    console.note("resized")
    out, err = capsys.readouterr()
    assert out == "" and err == "note: resized\n"


def test_training_logs_a_line_when_the_time_is_up_whatever_log_every(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)
    make_trainer(epochs=1, quiet=False, log_every=1000).fit(*loaders())  # 6 steps, none a multiple of 1000
    steps = [line for line in capsys.readouterr().out.splitlines() if " step " in line]
    assert len(steps) == 6 and "steps/s, epoch ends in" in steps[0]
