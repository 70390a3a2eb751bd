"""``convscope explain`` end to end on a tiny trained run: every method, real photos, and the bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convscope.cli import main
from tests.cli_helpers import cli
from tests.data.helpers import make_image, make_imagefolder
from tests.test_cli import QUICK


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explain")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVSCOPE_HOME", str(root / "home"))
        folder = make_imagefolder(root / "pets", ("cat", "dog"), per_class=12, size=(16, 16), splits=("train", "test"))
        assert main(["train", "--data", f"imagefolder:{folder}", "--out", str(root / "run"), *QUICK]) == 0
    return root / "run"


@pytest.mark.parametrize("method", ["saliency", "guided-backprop", "gradcam", "integrated-gradients", "feature-maps"])
def test_every_method_draws_a_figure_and_says_what_it_converted(capsys, run_dir: Path, tmp_path: Path, method: str):
    grey = make_image(tmp_path / "grey.png", size=(30, 20), mode="L")  # the run is RGB 16x16
    out = tmp_path / "figure.png"
    code, stdout, err = cli(capsys, "explain", run_dir, grey, "--method", method, "--out", out)
    assert code == 0, err
    assert "greyscale converted to 3 channels, 30x20 scaled and centre-cropped to 16x16" in err  # notes: stderr
    assert f"{grey}: predicted " in stdout and f"written: {out}" in stdout
    assert Image.open(out).size[0] > 300
    if method == "gradcam":
        assert "gradcam layer: features.5.4 (Conv2d" in stdout
    if method == "guided-backprop":
        assert "applied to GELU" in stdout  # fastnet-small has no ReLU: said, not silently the plain gradient


def test_real_photos_with_a_chosen_target_and_layer(capsys, run_dir: Path, tmp_path: Path):
    skimage_data = pytest.importorskip("skimage.data")
    photos = []
    for name in ("chelsea", "coffee"):
        photos.append(tmp_path / f"{name}.jpg")
        Image.fromarray(getattr(skimage_data, name)()).save(photos[-1])
    out = tmp_path / "cat.png"
    code, stdout, err = cli(
        capsys, "explain", run_dir, *photos, "--method", "gradcam", "--target", "dog", "--layer", "features.0",
        "--out", out, "--alpha", "0.5",
    )  # fmt: skip
    assert code == 0, err
    assert stdout.count("explained 'dog'") == 2 and "gradcam layer: features.0 (Conv2d" in stdout
    assert "chosen with --layer" in stdout
    code, stdout, err = cli(capsys, "explain", run_dir, photos[0], "--method", "saliency", "--target", "0",
                            "--out", out)  # fmt: skip
    assert code == 0 and "explained 'cat'" in stdout, err
    pixels = np.asarray(Image.open(out).convert("L"))
    assert pixels.std() > 10  # a drawn figure, not a blank canvas


def test_default_output_goes_into_the_run(capsys, run_dir: Path, tmp_path: Path):
    image = make_image(tmp_path / "x.png", size=(16, 16))
    code, stdout, err = cli(capsys, "explain", run_dir, image, "--method", "saliency")
    assert code == 0, err
    assert f"written: {run_dir / 'explanations' / 'saliency.png'}" in stdout
    assert (run_dir / "explanations" / "saliency.png").is_file()


BAD = {
    "unreadable": (["{bad}", "--method", "saliency"], "cannot decode image '{bad}'"),
    "missing": (["{tmp}/nope.png", "--method", "saliency"], "input image '{tmp}/nope.png' does not exist"),
    "attention": (["{good}", "--method", "attention"], "method 'attention' does not apply to this run"),
    "target": (["{good}", "--method", "gradcam", "--target", "horse"],
               "--target 'horse' is not a class of this run; expected a name or 0..1: cat, dog"),
    "target-index": (["{good}", "--method", "gradcam", "--target", "2"], "--target '2' is not a class"),
    "method": (["{good}", "--method", "lime"], "unknown explanation method 'lime'; expected one of: attention"),
    "no-method": (["{good}"], "--method is required: one of attention, feature-maps, gradcam"),
    "layer": (["{good}", "--method", "gradcam", "--layer", "head.7"], "the model has no layer 'head.7'"),
    "alpha": (["{good}", "--method", "saliency", "--alpha", "1.5"], "--alpha 1.5: expected an opacity between 0 and 1"),
    "saturation": (["{good}", "--method", "saliency", "--saturation", "0"], "--saturation 0.0: expected a positive"),
    "layer-linear": (["{good}", "--method", "gradcam", "--layer", "head.2"], "does not produce N x C x H x W maps"),
    "layer-not-gradcam": (["{good}", "--method", "saliency", "--layer", "features.0"], "--layer applies to gradcam"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_error_line(capsys, run_dir: Path, tmp_path: Path, case: str):
    good = make_image(tmp_path / "good.png", size=(16, 16))
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    args, message = BAD[case]
    values = {"good": good, "bad": bad, "tmp": tmp_path}
    code, _, err = cli(capsys, "explain", run_dir, *[a.format(**values) for a in args])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message.format(**values) in lines[0]


def test_text_runs_go_to_the_text_explainer_and_get_a_report(capsys, tmp_path: Path):
    from tests.test_text_cli import QUICK as TEXT_QUICK
    from tests.test_text_cli import columns, names_csv

    run = tmp_path / "names"
    assert main(["train", *TEXT_QUICK, *columns(names_csv(tmp_path / "names.csv")), "--out", str(run)]) == 0
    capsys.readouterr()
    code, stdout, err = cli(capsys, "explain", run, "maria", "tuco", "--out", tmp_path / "names.png")
    assert code == 0, err
    assert (tmp_path / "names.png").is_file() and "maria" in stdout
    code, stdout, err = cli(capsys, "report", run, "--trust-images", "4")
    assert code == 0, err
    page = (run / "report.html").read_text()
    assert "Test metrics" in page and "a text run: see `convscope explain` for it" in page
