"""`convscope segment` end to end on a tiny weakly supervised run, and the weak segmentation's bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_helpers import cli
from tests.data.helpers import make_idx

TINY = ["--epochs", "1", "--batch-size", "16", "--quiet", "--set", "model.widths=[4,8]", "--set",
        "data.eval_batch_size=16", "--set", "data.valid_fraction=0.25"]  # fmt: skip


@pytest.fixture
def fake_fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = make_idx(tmp_path / "fashion", n=60, n_test=30)
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST", str(folder))
    return folder


def test_segment_writes_palette_masks_overlays_and_the_classes_found(capsys, tmp_path, fake_fashion):
    run = tmp_path / "run"
    code, out, err = cli(capsys, "train", "--recipe", "fashion-scenes-weakseg", "--data", "fashion-scenes:40,16",
                         "--out", run, *TINY)  # fmt: skip
    assert code == 0, err
    assert "attention masks: mean IoU" in out
    chosen = json.loads((run / "segmentation.json").read_text())["rules"]["attention"]
    assert -2 <= chosen["params"]["logit_threshold"] <= 15.5 and "per_class_iou" in chosen
    assert "crf" in chosen  # the CRF setting chosen on the valid scenes, or None where none beat the raw masks
    assert len(chosen["sweep"]) == 36 and chosen["crf_sweep"][0]["crf"] is None  # the protocol, every setting
    assert (run / "plots" / "threshold-sweep-attention.png").is_file()
    assert (run / "plots" / "hsv-epoch-01.png").is_file()
    assert "segmentation" in json.loads((run / "summary.json").read_text())

    same = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(same)
    other = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (70, 80, 3), dtype=np.uint8)).save(other)
    code, out, err = cli(capsys, "segment", run, same, other, "--out", tmp_path / "masks")
    assert code == 0, err
    assert f"note: '{other}': " in err and "70x80 scaled (aspect ratio changed) to 64x64" in err
    assert "its mask scaled back to the image" in err and f"'{same}'" not in err
    for stem, size in (("scene", (64, 64)), ("big", (80, 70))):
        mask = Image.open(tmp_path / "masks" / f"{stem}-mask.png")
        assert mask.mode == "P" and mask.size == size  # the mask is at the image's own size
        assert Image.open(tmp_path / "masks" / f"{stem}-overlay.png").size == size
    segments = json.loads((tmp_path / "masks" / "segments.json").read_text())
    assert segments["crf"] == (chosen["crf"] and chosen["crf"]["params"])  # segment refines as the run chose
    rows = segments["images"]
    assert sum(c["share"] for c in rows[0]["classes"]) == pytest.approx(1.0, abs=1e-3)

    # A run whose valid scenes chose a CRF: segment refines with it. With a unary of 1/2 everywhere (a huge
    # temperature) nothing tips a pixel to an item, so the whole mask is background, whatever the tiny model says.
    written = json.loads((run / "segmentation.json").read_text())
    written["rules"]["attention"]["crf"] = {"params": {"temperature": 1e9, "sxy": 10, "srgb": 5}}
    (run / "segmentation.json").write_text(json.dumps(written))
    code, out, err = cli(capsys, "segment", run, same, "--out", tmp_path / "refined")
    assert code == 0, err
    assert json.loads((tmp_path / "refined" / "segments.json").read_text())["crf"]["temperature"] == 1e9
    assert np.asarray(Image.open(tmp_path / "refined" / "scene-mask.png")).max() == 0

    code, _, err = cli(capsys, "segment", run, tmp_path / "missing.png", "--out", tmp_path / "masks")
    assert code == 2 and err.startswith("error: input image") and "missing.png" in err
    code, _, err = cli(capsys, "evaluate", run)
    assert code == 2 and "weakseg run" in err and "Traceback" not in err


def test_a_model_without_class_maps_is_one_error_line(capsys, tmp_path, fake_fashion):
    # fcn-small with its default pooling returns N x C logits, not maps.
    code, _, err = cli(capsys, "train", "--recipe", "fashion-scenes-weakseg", "--data", "fashion-scenes:20,8",
                       "--set", "model.pooling=smoothmax", "--out", tmp_path / "run", "--epochs", "1")  # fmt: skip
    assert code == 2 and err.startswith("error: the model returns") and "not a spatial map" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_scene_counts_and_a_mask_task_on_image_labels_are_errors(capsys, tmp_path, fake_fashion):
    code, _, err = cli(capsys, "train", "--recipe", "fashion-scenes-weakseg", "--data", "fashion-scenes:x,8",
                       "--out", tmp_path / "a")  # fmt: skip
    assert code == 2 and "fashion-scenes:TRAIN,TEST" in err
    code, _, err = cli(capsys, "train", "--recipe", "fashion-scenes-supervised", "--data", "fashion-mnist",
                       "--out", tmp_path / "b", *TINY)  # fmt: skip
    assert code == 2 and "pixel masks" in err


def test_one_class_from_image_labels_trains_and_draws_its_maps(capsys, tmp_path):
    # USER-ASKS (PSA #14): binary and custom data, one class and the background, must work.
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (tmp_path / "one" / split / "cat").mkdir(parents=True)
        for i in range(12):
            image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "one" / split / "cat" / f"{i}.png")
    code, out, err = cli(capsys, "train", "--recipe", "cifar10-weakseg", "--data", f"imagefolder:{tmp_path / 'one'}",
                         "--out", tmp_path / "run", "--epochs", "1", "--set", "model.widths=[4,4,4,4]",
                         "--set", "train.batch_size=8")  # fmt: skip
    assert code == 0, err
    assert "1 class: cat" in out and (tmp_path / "run" / "plots" / "hsv-epoch-01.png").is_file()

    from convscope import api
    from convscope.report.segmentation import plot_run_hsv_grid

    plot_run_hsv_grid(api.load_run(tmp_path / "run", device="cpu"), tmp_path / "final.png")  # what the bench draws
    assert Image.open(tmp_path / "final.png").size[0] > 200

    # Trained without masks, the run chose no thresholds: segment says it uses the defaults.
    image = tmp_path / "one" / "test" / "cat" / "0.png"
    code, out, err = cli(capsys, "segment", tmp_path / "run", image, "--out", tmp_path / "masks")
    assert code == 0, err
    assert "has not chosen its mask thresholds" in err and "using the defaults" in err
