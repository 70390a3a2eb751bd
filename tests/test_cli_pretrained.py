"""Pretrained weights by name end to end, offline (a random state dict placed in torch.hub's cache): the finetune
recipe from ``torchvision:resnet18``, ``predict`` and ``explain`` with the weights' ImageNet classes, and the one
error line when the weights are neither cached nor downloadable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from convscope.config import load_recipe
from convscope.data.images import decode_image
from tests.cli_helpers import cli, one_error_line
from tests.data.helpers import make_image, make_imagefolder
from tests.models.pretrained_helpers import offline, place_torchvision_weights

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("torch-home")
    place_torchvision_weights(home, "resnet18")
    return home


def test_finetune_recipe_starts_from_cached_torchvision_weights_with_imagenet_normalisation(
    capsys, monkeypatch, torch_home: Path, tmp_path: Path
):
    offline(monkeypatch, torch_home)
    photos = make_imagefolder(tmp_path / "photos", classes=("cat", "dog", "fox"), per_class=6, size=(32, 32))
    run = tmp_path / "run"
    # One epoch (the recipe's first: its head on the frozen body), on the images' own 32x32 rather than 224x224.
    code, out, err = cli(capsys, "train", "--recipe", "finetune", "--data", f"imagefolder:{photos}", "--out", run,
                         "--epochs", "1", "--batch-size", "4", "--quiet", "--set", "data.image_size=32")  # fmt: skip
    assert code == 0, err
    loaded = next(line for line in out.splitlines() if line.startswith("init: loaded"))
    cached = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert loaded.startswith(
        "init: loaded 120 of 122 tensors from torchvision:resnet18 (ResNet18_Weights.IMAGENET1K_V1, "
    )
    assert str(cached) in loaded and "normalised by" not in out  # the recipe normalises as the weights expect
    info = json.loads((run / "run.json").read_text())
    assert (info["mean"], info["std"]) == IMAGENET
    # The frozen body (batch-norm statistics too) is still exactly the cached file's.
    trained, cached_state = load_file(run / "model.safetensors"), torch.load(cached, weights_only=True)
    assert torch.equal(trained["features.layer3.0.conv1.weight"], cached_state["layer3.0.conv1.weight"])
    assert torch.equal(trained["features.bn1.running_mean"], cached_state["bn1.running_mean"])

    code, _, err = cli(capsys, "train", "--recipe", "finetune", "--set", "data.normalize=mine")
    assert one_error_line(err) == "error: data.normalize = 'mine': expected one of: data, imagenet"


def test_a_note_says_when_the_data_is_normalised_otherwise_than_the_weights_learnt(capsys):
    from convscope.api import _say_if_normalised_otherwise

    recipe = load_recipe("finetune", {"data.normalize": "data"})
    _say_if_normalised_otherwise(recipe, {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}, IMAGENET)
    out = capsys.readouterr().out
    assert out.startswith("note: torchvision:resnet18's weights learnt from images normalised by mean "
                          "[0.485, 0.456, 0.406] and std [0.229, 0.224, 0.225]; this run normalises by mean "
                          "[0.5, 0.5, 0.5] and std [0.2, 0.2, 0.2] (data.normalize = 'data'); the finetune recipe "
                          "sets data.normalize = 'imagenet'")  # fmt: skip
    _say_if_normalised_otherwise(recipe, {"mean": IMAGENET[0], "std": IMAGENET[1]}, IMAGENET)
    assert capsys.readouterr().out == ""


def test_predict_and_explain_by_name_use_the_weights_classes_and_preprocessing(
    capsys, monkeypatch, torch_home: Path, tmp_path: Path
):
    offline(monkeypatch, torch_home)
    monkeypatch.chdir(tmp_path)
    photo = make_image(tmp_path / "photo.jpg", size=(300, 400))
    code, out, err = cli(capsys, "predict", "torchvision:resnet18", photo, "--topk", "12", "--json")
    assert code == 0, err
    assert ("note: torchvision:resnet18 (ResNet18_Weights.IMAGENET1K_V1): each image's shorter side resized to "
            "256 px, centre crop 224x224") in err  # fmt: skip
    # Per-input notes (what the resize did) are not part of the JSON.
    shown = json.loads("".join(line for line in out.splitlines() if not line.startswith("note: ")))[0]["top"]

    # What torchvision's own pipeline gives: its transforms, then the network with the cached weights.
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    net = torchvision.models.resnet18(weights=None)
    net.load_state_dict(torch.load(torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth", weights_only=True))
    with torch.no_grad():
        expected = net.eval()(weights.transforms()(decode_image(photo, 3)).unsqueeze(0)).softmax(dim=1)[0]
    categories = weights.meta["categories"]
    assert len(shown) == 12 and shown[0]["class"] == categories[int(expected.argmax())]
    # The same probabilities for the same names (up to a grey level of rounding in the resize: well under 1%).
    assert [row["p"] for row in shown] == pytest.approx([expected[categories.index(row["class"])].item()
                                                         for row in shown], rel=0.01)  # fmt: skip
    top = shown[0]["class"]

    code, out, err = cli(capsys, "explain", "torchvision:resnet18", photo, "--method", "gradcam")
    assert code == 0, err
    assert f"predicted {top!r}" in out and (tmp_path / "explanations" / "gradcam.png").is_file()


def test_weights_not_cached_without_a_network_are_one_error_line(capsys, monkeypatch, tmp_path: Path):
    offline(monkeypatch, tmp_path)
    photo = make_image(tmp_path / "photo.png", size=(32, 32))
    code, _, err = cli(capsys, "predict", "torchvision:resnet18", photo)
    assert code == 2
    line = one_error_line(err)
    assert "'torchvision:resnet18': its weights are not in the cache and could not be downloaded" in line
    assert f"place resnet18-f37072fd.pth (from https://download.pytorch.org/models/resnet18-f37072fd.pth) in " \
           f"{tmp_path / 'hub' / 'checkpoints'}" in line  # fmt: skip
