"""The transfer study keeps finished runs and resumes an interrupted one, so a long study survives a restart."""

import json

from convscope import api, bench_transfer


def test_a_finished_run_is_kept_and_an_interrupted_one_resumed(tmp_path, monkeypatch):
    calls = []

    def fake_train(recipe, *, out, resume=False):
        calls.append((out.name, resume))
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps({"test_accuracy": 0.5}))

    monkeypatch.setattr(api, "train", fake_train)
    finished, interrupted = tmp_path / "finished", tmp_path / "interrupted"
    finished.mkdir()
    (finished / "summary.json").write_text(json.dumps({"test_accuracy": 0.9}))
    (interrupted / "checkpoints").mkdir(parents=True)

    summary, wall = bench_transfer._timed_run("cifar5-pretrain", {}, finished)
    assert (summary["test_accuracy"], wall, calls) == (0.9, None, [])

    summary, wall = bench_transfer._timed_run("cifar5-fewshot", {}, interrupted)
    assert calls == [("interrupted", True)] and summary["test_accuracy"] == 0.5 and wall >= 0

    summary, _ = bench_transfer._timed_run("cifar5-fewshot", {}, tmp_path / "fresh")
    assert calls[-1] == ("fresh", False)
