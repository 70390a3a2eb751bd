"""The default recipe (fashion-mnist: fastnet-small with the whitening stem, Muon) through what a user runs next."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

from convscope import api
from convscope.config import load_recipe
from convscope.models.whitening import PatchWhitening
from tests.cli_helpers import cli
from tests.data.helpers import make_idx

TINY = ("--set", "model.widths=[4,8,8]", "--batch-size", "16", "--quiet")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("default-recipe")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("CONVSCOPE_HOME", str(root / "home"))
        monkeypatch.setenv("CONVSCOPE_FASHION_MNIST", str(make_idx(root / "fashion", n=80, n_test=20)))
        from convscope.cli import main

        assert main(["train", "--out", str(root / "run"), "--epochs", "1", *TINY]) == 0  # no --recipe
    return root / "run"


def test_the_default_is_the_whitening_stem_trained_by_muon():
    recipe = load_recipe("fashion-mnist")
    assert recipe.model.options["stem"] == "whiten" and recipe.optim.name == "muon" and recipe.train.epochs == 2


def test_a_default_run_keeps_its_fitted_stem_and_exports_with_parity(capsys, default_run: Path, tmp_path: Path):
    config = (default_run / "config.toml").read_text()
    assert 'name = "fashion-mnist"' in config and 'name = "muon"' in config
    run = api.load_run(default_run, device="cpu")
    stems = [m for m in run.model.modules() if isinstance(m, PatchWhitening)]
    assert len(stems) == 1 and stems[0].weight.abs().sum() > 0  # fitted, saved, loaded: not the zeros of a new one

    out = tmp_path / "m.onnx"
    code, printed, err = cli(capsys, "export", default_run, "--format", "onnx", "--out", out)
    assert code == 0, err
    assert "parity on" in printed and "same predicted class for 100.00%" in printed
    x = torch.randn(3, 1, 28, 28)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = torch.from_numpy(session.run(None, {"inputs": x.numpy()})[0])
    with torch.no_grad():
        assert torch.allclose(logits, run.model(x), atol=1e-4)


@pytest.mark.parametrize("method", ["gradcam", "guided-backprop"])
def test_a_default_run_is_explained(capsys, default_run: Path, tmp_path: Path, method: str):
    image = tmp_path / "item.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)).save(image)
    out = tmp_path / "figure.png"
    code, stdout, err = cli(capsys, "explain", default_run, image, "--method", method, "--out", out)
    assert code == 0, err
    assert f"written: {out}" in stdout and Image.open(out).size[0] > 300


def test_a_default_run_predicts_a_file(capsys, default_run: Path, tmp_path: Path):
    image = tmp_path / "item.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    code, out, err = cli(capsys, "predict", default_run, image, "--json")
    assert code == 0, err
    top = json.loads(out)[0]["top"]
    probabilities = [t["p"] for t in top]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-4
