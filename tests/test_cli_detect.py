"""`convscope detect`, and `evaluate`, `predict`, `export`, `report` on a detect run, end to end on a tiny run."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convscope.cli import main
from tests.cli_helpers import cli, one_error_line
from tests.data.helpers import make_idx

TINY = ["--epochs", "1", "--batch-size", "16", "--quiet", "--set", "model.widths=[8,8,16]", "--set",
        "model.head_width=8", "--set", "data.eval_batch_size=16", "--set", "data.valid_fraction=0.25"]  # fmt: skip


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny detect run for the module's tests (FashionScenes of a fake Fashion-MNIST)."""
    root = tmp_path_factory.mktemp("detect")
    run = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVSCOPE_FASHION_MNIST", str(make_idx(root / "fashion", n=60, n_test=30)))
        assert main(["train", "--recipe", "detect", "--data", "fashion-scenes:40,12", "--out", str(run), *TINY]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["test_map50_95"] <= summary["test_map50"] <= 1
    return run


def test_a_detect_run_is_evaluated_drawn_predicted_exported_and_reported(capsys, tmp_path, detect_run):
    code, out, err = cli(capsys, "evaluate", detect_run)
    assert code == 0, err
    result = json.loads((detect_run / "eval.json").read_text())
    assert result["images"] == 12 and result["boxes"] >= 12  # every scene holds one to three items
    assert set(result["per_class_ap"]) == set(json.loads((detect_run / "run.json").read_text())["classes"])
    counts = np.array(result["confusion_matrix"]["counts"])
    assert counts.shape == (11, 11) and result["confusion_matrix"]["labels"][-1] == "background"
    assert counts[:10].sum() == result["boxes"]  # each true box once: matched to a class or missed (background)
    assert "mAP@0.5" in out and (detect_run / "plots" / "precision_recall.png").is_file()

    scene = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(scene)
    wide = tmp_path / "wide.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 150, 3), dtype=np.uint8)).save(wide)
    out_dir = tmp_path / "boxes"
    code, out, err = cli(capsys, "detect", detect_run, scene, wide, "--out", out_dir, "--score-threshold", "0")
    assert code == 0, err
    written = json.loads((out_dir / "detections.json").read_text())["images"]
    assert [Path(row["image"]).name for row in written] == ["scene.png", "wide.jpg"]
    assert written[1]["width"] == 150 and written[1]["height"] == 60
    boxes = np.array([d["box"] for d in written[1]["detections"]]).reshape(-1, 4)
    assert len(boxes) > 0  # at score 0 every kept candidate is shown
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 150).all() and (boxes[:, 3] <= 60).all()  # file pixels
    assert Image.open(out_dir / "wide-boxes.png").size == (150 * 5, 60 * 5)  # small: enlarged 5x to read the labels
    assert "scene.png:" in out and "written:" in out

    code, out, err = cli(capsys, "predict", detect_run, scene, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["image"] == str(scene)  # a detect run's predictions are its boxes

    code, out, err = cli(capsys, "export", detect_run, "--format", "onnx", "--examples", "8")
    assert code == 0, err
    assert "parity on 8 test examples" in out

    code, _, err = cli(capsys, "explain", detect_run, scene, "--method", "gradcam")
    assert code == 2 and "is a detect run" in one_error_line(err)

    code, out, err = cli(capsys, "report", detect_run, "--trust-images", "4")
    assert code == 0, err
    html = (detect_run / "report.html").read_text()
    assert "mAP@[.5:.95]" in html and "true boxes in white" in html


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--score-threshold", "1.5"], "score_threshold = 1.5"),
        (["--iou-threshold", "0"], "iou_threshold = 0"),
        (["--iou-threshold", "nan"], "iou_threshold = nan"),
    ],
)
def test_bad_thresholds_are_one_error_line(capsys, tmp_path, detect_run, flags, message):
    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(image)
    code, _, err = cli(capsys, "detect", detect_run, image, *flags)
    assert code == 2 and message in one_error_line(err)


def test_detect_on_a_classification_run_says_what_it_is(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST", str(make_idx(tmp_path / "fashion", n=40, n_test=10)))
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--recipe", "fashion-mnist", "--out", run, "--epochs", "1", "--quiet",
                       "--set", "model.widths=[4,8,8]")  # fmt: skip
    assert code == 0, err
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    code, _, err = cli(capsys, "detect", run, image)
    assert code == 2 and "not a detect run" in one_error_line(err)


def test_the_seeds_grid_says_how_many_boxes_share_a_cell(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST", str(make_idx(tmp_path / "fashion", n=60, n_test=30)))
    run = tmp_path / "run"
    code, out, err = cli(capsys, "train", "--recipe", "fashion-scenes-yolov1", "--data", "fashion-scenes:40,12",
                         "--out", run, "--epochs", "1", "--batch-size", "16", "--quiet", "--set", "model.grid=1",
                         "--set", "model.widths=[8,8,16]")  # fmt: skip
    assert code == 0, err
    info = json.loads((run / "run.json").read_text())
    # One cell for the whole scene: of each scene's items only the largest is learnt.
    assert info["boxes_in_shared_cells"] > 0
    assert f"{info['boxes_in_shared_cells']} training box(es) share a grid cell" in out


def test_own_boxes_train_without_a_recipe_and_a_bad_label_is_one_error_line(capsys, tmp_path):
    from tests.data.test_yolo_coco_sources import make_yolo

    root = make_yolo(tmp_path / "shop", counts={"train": 12, "val": 4})
    (root / "labels" / "train" / "3.txt").write_text("0 0.5 0.5 0.4 0.2\n7 0.5 0.5 0.1 0.1\n")  # class 7 of 2
    small = ["--epochs", "1", "--quiet", "--set", "model.widths=[8,8,16]", "--set", "model.head_width=8"]
    code, _, err = cli(capsys, "train", "--data", f"yolo:{root}", "--out", tmp_path / "bad", *small)
    line = one_error_line(err)
    assert code == 2 and "3.txt" in line and "line 2" in line
    code, out, err = cli(capsys, "train", "--data", f"yolo:{root}", "--out", tmp_path / "run", "--skip-bad", *small)
    assert code == 0, err
    assert "'detect'" in out  # the default recipe for boxes
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["classes"] == ["cat", "dog"] and any("3.txt" in entry for entry in info["skipped"])


@pytest.mark.parametrize("recipe", ["fashion-scenes-detect", "fashion-scenes-yolov1"])
def test_a_short_run_on_200_scenes_lowers_the_loss(capsys, tmp_path, monkeypatch, recipe):
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST", str(make_idx(tmp_path / "fashion", n=100, n_test=30)))
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--recipe", recipe, "--data", "fashion-scenes:200,20", "--out", run,
                       "--epochs", "4", "--batch-size", "20", "--quiet", "--set", "model.widths=[8,16,16]")  # fmt: skip
    assert code == 0, err
    with (run / "metrics.csv").open() as stream:
        rows = [row for row in csv.DictReader(stream) if row["split"] == "train"]
    first = [float(row["loss"]) for row in rows if row["epoch"] == "1"]
    last = [float(row["loss"]) for row in rows if row["epoch"] == "4"]
    assert sum(last) / len(last) < 0.8 * sum(first) / len(first)
