"""airbench's whitening stem: its filters whiten the patches they were fitted to, and a run trains, saves and
reloads them."""

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from convscope import api
from convscope.errors import UserError
from convscope.models import create_model
from convscope.models.whitening import PatchWhitening, fit_to_data
from tests.cli_helpers import cli
from tests.data.helpers import make_imagefolder


def test_fitted_filters_whiten_the_patches():
    torch.manual_seed(0)
    # Correlated channels with unequal scales, as colour images have.
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.3, 0.0], [0.5, 0.4, 2.0]])
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(64, 3, 12, 12)) + 0.5
    layer = PatchWhitening(3)
    layer.fit(images)
    assert layer.out_channels == 24
    half = layer.weight[:12]
    torch.testing.assert_close(layer.weight[12:], -half)  # each filter with its negative
    # The first half's responses (bias 0) to the fitted patches have the identity as second moment; eps pulls
    # each variance slightly below 1.
    responses = torch.nn.functional.conv2d(images, half).transpose(0, 1).reshape(12, -1)
    moment = responses @ responses.T / responses.shape[1]
    torch.testing.assert_close(moment, torch.eye(12), atol=0.02, rtol=0)
    assert layer.weight.requires_grad is False and [n for n, _ in layer.named_parameters()] == ["bias"]


def test_fastnet_whitening_stem():
    inputs = {"in_channels": 3, "image_size": (32, 32)}
    model = create_model("fastnet", num_classes=10, inputs=inputs, stem="whiten")
    stem = model.features[0]
    assert isinstance(stem, PatchWhitening) and stem.out_channels == 24
    assert "features.0.weight" in model.state_dict()  # the filters travel with the weights
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    images = torch.randn(8, 3, 32, 32)
    fit_to_data(model, images)
    assert stem.weight.abs().sum() > 0
    small = create_model("fastnet-small", num_classes=10, inputs={"in_channels": 1, "image_size": (28, 28)},
                         stem="whiten")  # fmt: skip
    assert small.features[0].out_channels == 8 and small(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_fastnet_stem_and_size_are_checked():
    with pytest.raises(UserError, match=r"stem = 'pca' is not one of: conv, whiten"):
        create_model("fastnet", num_classes=10, inputs={"in_channels": 3, "image_size": (32, 32)}, stem="pca")
    with pytest.raises(UserError, match=r"too small for model 'fastnet': expected at least 9x9"):
        create_model("fastnet", num_classes=10, inputs={"in_channels": 3, "image_size": (8, 8)}, stem="whiten")
    assert create_model("fastnet", num_classes=10, inputs={"in_channels": 3, "image_size": (8, 8)})


def test_a_run_fits_the_stem_to_its_training_images_and_keeps_it(capsys, tmp_path: Path):
    folder = make_imagefolder(tmp_path / "pets", ("cat", "dog"), per_class=12, size=(16, 16), splits=("train", "test"))
    out = tmp_path / "run"
    args = ["train", "--data", f"imagefolder:{folder}", "--model", "fastnet-small", "--set", 'model.stem="whiten"',
            "--epochs", "1", "--batch-size", "8", "--precision", "fp32", "--quiet", "--out", out]  # fmt: skip
    code, stdout, err = cli(capsys, *args)
    assert code == 0, err
    assert "whitening layer fitted to the patches of" in stdout
    saved = load_file(out / "model.safetensors")["features.0.weight"]
    run = api.load_run(out)
    # Fitted before training and never trained: the saved filters whiten the run's own training images.
    data = run.modality.prepare(run.recipe)
    refit = PatchWhitening(3)
    refit.fit(data.normalized_sample(5000))
    torch.testing.assert_close(saved, refit.weight)
    torch.testing.assert_close(run.model.features[0].weight, saved)
    assert api.predict(out, [next((folder / "test" / "cat").iterdir())])
    # The buffer-held filters export with the network, and the exported model computes what the eager one does.
    code, printed, err = cli(capsys, "export", out, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert code == 0, err
    difference = float(re.search(r"max abs logit difference ([0-9.e+-]+)", printed).group(1))
    assert difference < 1e-4
