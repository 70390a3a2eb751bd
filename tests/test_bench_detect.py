"""The detection benchmark: one scorer for every system, the budget turned into epochs, the one-shot runs, the
Ultralytics peer's boxes in torchmetrics' form, bad settings as `error:` lines."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from convscope import api
from convscope.bench import detect as bench_detect
from convscope.bench.detect import SystemRun
from convscope.data.boxes import scene_boxes
from convscope.data.scenes import open_scenes
from convscope.errors import UserError
from tests.data.helpers import make_idx

SCENES = "fashion-scenes:24,8"


@pytest.fixture
def fake_fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = make_idx(tmp_path / "fashion", n=40, n_test=20)
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST", str(folder))
    return folder


def _shifted(targets: list[dict], pixels: float) -> list[dict]:
    """Each true box as a prediction, moved right by ``pixels``."""
    shift = torch.tensor([pixels, 0.0, pixels, 0.0])
    return [{"boxes": t["boxes"] + shift, "scores": torch.ones(len(t["labels"])), "labels": t["labels"]}
            for t in targets]  # fmt: skip


def test_score_is_one_for_the_true_boxes_and_drops_at_strict_ious_for_shifted_ones():
    two = torch.tensor([[0.0, 5.0, 20.0, 30.0], [30.0, 30.0, 60.0, 62.0]])
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 38.0, 38.0]]), "labels": torch.tensor([3])},
               {"boxes": two, "labels": torch.tensor([1, 4])}]  # fmt: skip
    assert bench_detect.score(_shifted(targets, 0.0), targets) == {"map50": 1.0, "map50_95": 1.0}
    shifted = bench_detect.score(_shifted(targets, 3.0), targets)  # IoU 0.75-0.82: found at 0.5, missed at 0.9
    assert shifted["map50"] == 1.0 and 0.3 < shifted["map50_95"] < 0.8


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("bench.budget", "abc", "bench.budget = 'abc': expected a positive number"),
        ("bench.budget", "-5", "bench.budget = '-5'"),
        ("bench.systems", "convscope,yolo", "bench.systems = 'convscope,yolo': expected a comma-separated list"),
        ("bench.one_shot", "maybe", "bench.one_shot = 'maybe': expected true or false"),
        ("bench.epochs", "3", "bench.epochs: not a setting of the detect benchmark"),
    ],
)
def test_bad_study_settings_are_user_errors(key, value, message):
    with pytest.raises(UserError, match=message):
        bench_detect.study_options({key: value})


def test_study_settings_are_split_from_the_recipe_overrides():
    options, rest = bench_detect.study_options(
        {"bench.budget": "20", "bench.systems": "ultralytics, convscope", "bench.one_shot": "false", "train.seed": "1"}
    )
    assert (options.budget, options.systems, options.one_shot) == (20.0, ("ultralytics", "convscope"), False)
    assert rest == {"train.seed": "1"}


def test_other_data_than_scenes_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"data.name = 'fashion-mnist': the detect benchmark runs on fashion-scenes"):
        bench_detect.run_detect_study(out=tmp_path / "d.json", overrides={"data.name": "fashion-mnist"},
                                      results_dir=tmp_path, machine={}, run_dir=tmp_path / "study")  # fmt: skip


def test_every_system_is_scored_by_the_same_code_on_the_same_test_scenes(tmp_path, monkeypatch, fake_fashion):
    test = scene_boxes(open_scenes(SCENES)["test"])
    targets = [test.targets(i) for i in range(len(test))]
    calls = {}

    def figures(seconds: float) -> dict:
        return {"seconds": seconds, "epochs": 2, "train_images_per_second": 100.0, "inference_images_per_second": 900.0}

    def fake_convscope(recipe_name, overrides, root, name, budget, images):
        calls[name] = (recipe_name, overrides, budget, images)
        return SystemRun(_shifted(targets, 0.0 if name == "convscope" else 3.0), figures(budget - 1))

    def fake_peer(spec, valid_fraction, root, budget, images):
        calls["ultralytics"] = (spec, valid_fraction, budget, images)
        return SystemRun(_shifted(targets, 6.0), figures(budget))

    monkeypatch.setattr(bench_detect, "convscope_system", fake_convscope)
    monkeypatch.setattr(bench_detect, "ultralytics_system", fake_peer)
    overrides = {"bench.budget": "7", "bench.one_shot": "false", "data.name": SCENES}
    result = bench_detect.run_detect_study(out=tmp_path / "d.json", overrides=overrides, results_dir=tmp_path,
                                           machine={}, run_dir=tmp_path / "study")  # fmt: skip
    systems = result["systems"]
    assert list(systems) == ["convscope", "convscope_yolov1", "ultralytics"]
    assert systems["convscope"]["map50_95"] == 1.0 > systems["convscope_yolov1"]["map50_95"]
    assert systems["convscope_yolov1"]["map50_95"] > systems["ultralytics"]["map50_95"]
    assert result["reached"] == {"convscope_map50_95_above_ultralytics": True, "convscope_map50": True,
                                 "yolov1_map50": True}  # fmt: skip
    assert calls["convscope"][:3] == ("fashion-scenes-detect", {"data.name": SCENES}, 7.0)
    assert calls["convscope_yolov1"][0] == "fashion-scenes-yolov1"
    assert calls["ultralytics"][:3] == (SCENES, bench_detect.load_recipe("fashion-scenes-detect").data.valid_fraction,
                                        7.0)  # fmt: skip
    assert all(torch.equal(call[3], test.images) for call in calls.values())  # the same test scenes for all
    written = json.loads((tmp_path / "d.json").read_text())
    assert written["budget_seconds"] == 7.0 and "one_shot" not in written
    assert written["command"] == f"convscope bench detect --set bench.budget=7 --set bench.one_shot=false " \
                                 f"--set data.name={SCENES}"  # fmt: skip
    assert {"map50", "map50_95", "seconds", "train_images_per_second", "inference_images_per_second"} <= set(
        written["systems"]["ultralytics"]
    )


def _fake_train(seconds: float, trained: list):
    def fake_train(recipe, *, out, resume=False):
        trained.append((out.name, recipe))
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps({"train_seconds": seconds * recipe.train.epochs, "epochs":
                                                      recipe.train.epochs, "test_accuracy": 0.9}))  # fmt: skip

    return fake_train


def test_the_budget_becomes_the_epochs_one_timed_epoch_fits(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(api, "train", _fake_train(2.0, trained))
    assert bench_detect.budget_epochs("fashion-scenes-detect", {}, 7.0, tmp_path / "calibration") == 3
    assert [(name, recipe.train.epochs) for name, recipe in trained] == [("calibration", 1)]
    assert bench_detect.budget_epochs("fashion-scenes-detect", {}, 1.0, tmp_path / "calibration") == 1  # kept
    assert bench_detect.budget_epochs("fashion-scenes-detect", {"train.epochs": "5"}, 7.0, tmp_path / "other") == 5
    assert len(trained) == 1


def test_one_shot_runs_differ_from_scratch_only_in_their_start_or_their_regression(tmp_path, monkeypatch):
    trained, runs = [], {}
    monkeypatch.setattr(api, "train", _fake_train(2.0, trained))

    def fake_run(recipe_name, overrides, run_dir, images):
        runs[run_dir.name] = overrides
        return SystemRun([], {"seconds": 1.0})

    monkeypatch.setattr(bench_detect, "convscope_run", fake_run)
    monkeypatch.setattr(bench_detect, "score", lambda predictions, targets: {"map50": 0.5, "map50_95": 0.25})
    study = tmp_path / "study"
    result = bench_detect.one_shot_study({"train.seed": "1"}, study, 9.0, torch.zeros(0, 1, 64, 64), [])
    assert [name for name, _ in trained] == ["convscope-calibration", "classifier"]
    assert trained[1][1].task.name == "classify" and result["epochs"] == 4
    scratch = {"train.seed": "1", "train.epochs": "4"}
    agnostic = bench_detect.agnostic_default("fashion-scenes-detect", {})
    other = "class_specific" if agnostic else "class_agnostic"
    assert runs == {
        "convscope": scratch,
        "one-shot-frozen": {**scratch, "transfer.init": str(study / "classifier"), "transfer.freeze_epochs": "4"},
        "one-shot-fine-tuned": {**scratch, "transfer.init": str(study / "classifier"), "transfer.freeze_epochs": "0",
                                "transfer.unfreeze_at": "0"},
        f"one-shot-{other}": {**scratch, "model.class_agnostic": str(not agnostic).lower()},
    }  # fmt: skip
    assert set(result["runs"]) == {"scratch", "frozen", "fine_tuned", "class_agnostic", "class_specific"}


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="ultralytics is not installed")
def test_the_peer_trains_offline_and_gives_torchmetrics_boxes(tmp_path, fake_fashion):
    from convscope.bench.detect_peer import run_peer

    train = scene_boxes(open_scenes(SCENES)["train"])
    test = scene_boxes(open_scenes(SCENES)["test"])
    data_yaml = bench_detect.peer_folder(SCENES, 0.25, tmp_path / "yolo")
    assert len(list((tmp_path / "yolo" / "images" / "val").iterdir())) == 6
    assert len(list((tmp_path / "yolo" / "images" / "train").iterdir())) == len(train) - 6
    result = run_peer(data_yaml, test.images, 0.5, tmp_path / "peer", batch_size=4)  # stops after its first step
    assert len(result.predictions) == len(test)
    for found in result.predictions:
        assert found["boxes"].dtype == torch.float32 and found["boxes"].shape == (len(found["scores"]), 4)
        assert found["labels"].dtype == torch.int64 and found["scores"].dtype == torch.float32
        if len(found["labels"]):
            assert found["boxes"].min() >= 0 and found["boxes"].max() <= 64 and found["labels"].max() < 10
    figures = result.figures
    assert figures["epochs"] >= 1 and figures["train_images_seen"] > 0 and figures["inference_images_per_second"] > 0
    assert (tmp_path / "peer" / "config" / "Ultralytics" / "settings.json").is_file()  # not the user's settings
    assert 0 <= bench_detect.score(result.predictions, [test.targets(i) for i in range(len(test))])["map50"] <= 1
    again = run_peer(data_yaml, test.images, 0.5, tmp_path / "peer")  # kept, not trained again
    assert again.figures == figures


def test_a_missing_ultralytics_is_one_error_line_naming_the_extra(tmp_path, monkeypatch):
    from convscope.bench import detect_peer

    monkeypatch.setattr(detect_peer.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"needs Ultralytics: pip install 'convscope\[bench\]'"):
        detect_peer.run_peer(tmp_path / "data.yaml", torch.zeros(1, 1, 64, 64, dtype=torch.uint8), 1.0, tmp_path / "p")
