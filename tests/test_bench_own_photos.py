"""``convscope bench own-photos``: only what is cheap (the folder generator, the dispatch and the goal's rule);
the benchmark itself trains seven runs and is run by hand (benchmarks/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from convscope import bench
from convscope.bench import own_photos as bench_own_photos
from convscope.bench.own_photos import FIVE_PHOTOS, PHOTOS, photo_folder

pytest.importorskip("skimage.data")


def test_photo_folder_writes_one_folder_per_class_of_jpeg_and_png_crops_at_the_given_sizes(tmp_path: Path):
    root = photo_folder(tmp_path / "photos", PHOTOS, per_class=6, sizes=(96, 128))
    assert sorted(p.name for p in root.iterdir()) == sorted(PHOTOS)
    files = sorted((root / "cat").iterdir())
    assert [f.suffix for f in files] == [".png", ".jpg"] * 3
    sizes = {Image.open(f).size for name in PHOTOS for f in (root / name).iterdir()}
    assert sizes <= {(96, 96), (128, 128)} and len(sizes) == 2
    assert all(Image.open(f).mode == "RGB" for f in files)
    # The same seed gives the same folder, so a rerun of the benchmark trains on the same photographs.
    again = photo_folder(tmp_path / "again", PHOTOS, per_class=6, sizes=(96, 128))
    assert (again / "cat" / "000.png").read_bytes() == (root / "cat" / "000.png").read_bytes()


def test_the_five_class_folder_uses_colour_photographs_scikit_image_ships():
    import skimage.data

    for source in FIVE_PHOTOS.values():
        assert getattr(skimage.data, source)().shape[2] == 3


def test_own_photos_is_a_listed_study_dispatched_by_run_benchmark(monkeypatch: pytest.MonkeyPatch):
    assert bench.STUDIES["own-photos"].goal == bench_own_photos.GOAL
    calls = []
    monkeypatch.setattr(bench_own_photos, "run_own_photos_study", lambda **kwargs: calls.append(kwargs) or {"ok": 1})
    assert bench.run_benchmark("own-photos", overrides={"train.precision": "fp32"}) == {"ok": 1}
    assert calls[0]["overrides"] == {"train.precision": "fp32"} and calls[0]["results_dir"] == bench.RESULTS_DIR


def _run(low: float, finite: bool = True) -> dict:
    return {"above_chance": low > 1 / 3, "kept_model_finite": finite}


@pytest.mark.parametrize(
    ("low", "finite", "pass_beaten", "reached"),
    [(0.6, True, False, True), (0.2, True, False, False), (0.6, False, False, False), (0.6, True, True, False)],
)
def test_the_goal_needs_every_run_above_chance_and_finite_and_no_pass_beaten_by_random(
    low, finite, pass_beaten, reached
):
    cases = {
        "photos": {
            "defaults_2_epochs": _run(0.7),
            "transfer": _run(low, finite),
            "source": _run(0.1),  # the source run is on other data: not part of the goal
            "trust": {"no_pass_beaten_by_random": not pass_beaten},
        },
        "photos-5": {"defaults_10_epochs": _run(0.7)},
    }
    assert bench_own_photos._reached(cases) is reached
