"""Pretrained weights by name, offline: torchvision's through a placed file in torch.hub's cache, into a
torchvision network and into convscope's ResNet (``transfer.init``); the errors when they cannot be had."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from convscope.errors import UserError
from convscope.models import create_model
from convscope.models.pretrained import is_pretrained_name, load_pretrained
from convscope.models.weights import load_initial_weights
from tests.models.pretrained_helpers import offline, place_torchvision_weights


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """A TORCH_HOME holding resnet18's weights file (random tensors): (TORCH_HOME, file, its state dict)."""
    home = tmp_path_factory.mktemp("torch-home")
    return home, *place_torchvision_weights(home, "resnet18")


def test_torchvision_weights_come_from_the_hub_cache_with_their_classes_and_preprocessing(monkeypatch, cached):
    home, path, state = cached
    offline(monkeypatch, home)
    pretrained = load_pretrained("torchvision:resnet18")
    assert pretrained.source == str(path) and path.name == "resnet18-f37072fd.pth"
    assert pretrained.weights == "ResNet18_Weights.IMAGENET1K_V1"
    assert pretrained.state_dict.keys() == state.keys()
    assert all(torch.equal(pretrained.state_dict[k], v) for k, v in state.items())
    assert len(pretrained.categories) == 1000 and pretrained.categories[:2] == ["tench", "goldfish"]
    assert (pretrained.resize, pretrained.crop) == (256, 224)
    assert (pretrained.mean, pretrained.std) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    net = pretrained.build()
    assert not net.training and torch.equal(net.state_dict()["fc.weight"], state["fc.weight"])


def test_transfer_init_by_name_fills_convscope_resnet18_but_its_head(monkeypatch, cached):
    home, path, state = cached
    offline(monkeypatch, home)
    model = create_model("resnet18", num_classes=3, inputs={"in_channels": 3, "image_size": (64, 64)})
    report = load_initial_weights(model, "torchvision:resnet18", classes=["a", "b", "c"])
    own = model.state_dict()
    assert torch.equal(own["features.conv1.weight"], state["conv1.weight"])
    assert torch.equal(own["features.layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
    assert sorted(k.split(" ")[0] for k in report.left) == ["head.fc.bias", "head.fc.weight"]
    assert len(report.loaded) == len(own) - 2
    described = report.describe()
    assert f"from torchvision:resnet18 (ResNet18_Weights.IMAGENET1K_V1, {path})" in described
    assert report.normalization == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def test_weights_neither_cached_nor_downloadable_are_one_error_naming_the_file(monkeypatch, tmp_path: Path):
    offline(monkeypatch, tmp_path)
    with pytest.raises(UserError) as caught:
        load_pretrained("torchvision:resnet18")
    message = str(caught.value)
    assert "not in the cache and could not be downloaded" in message and "name resolution" in message
    assert f"place resnet18-f37072fd.pth (from https://download.pytorch.org/models/resnet18-f37072fd.pth) in " \
           f"{tmp_path / 'hub' / 'checkpoints'} (set by TORCH_HOME)" in message  # fmt: skip


def test_a_corrupt_cached_file_is_named(monkeypatch, tmp_path: Path):
    offline(monkeypatch, tmp_path)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "resnet18-f37072fd.pth").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match=r"the cached file '.*resnet18-f37072fd.pth' is not a readable state dict"):
        load_pretrained("torchvision:resnet18")


def test_unknown_names_and_missing_timm_are_user_errors(monkeypatch, tmp_path: Path):
    offline(monkeypatch, tmp_path)
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed, whether it is or not
    cases = [
        ("torchvision:resnet19", "torchvision has no ImageNet classifier 'resnet19'; expected one of: alexnet"),
        ("torchvision:resnet50.IMAGENET9K", "resnet50 has no weights 'IMAGENET9K'; expected one of: IMAGENET1K_V1"),
        ("timm:resnet18", "timm is not installed (pip install timm)"),
        ("torchvision:", "expected torchvision:NAME"),
    ]
    for spec, fragment in cases:
        with pytest.raises(UserError) as caught:
            load_pretrained(spec)
        assert fragment in str(caught.value), (spec, str(caught.value))


def test_a_name_is_told_from_a_path(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_pretrained_name("torchvision:resnet18") and is_pretrained_name("timm:resnet50.a1_in1k")
    assert not is_pretrained_name("runs/c10") and not is_pretrained_name(tmp_path / "w.pth")
    (tmp_path / "torchvision:odd").mkdir()  # a folder that happens to be called so is a path
    assert not is_pretrained_name("torchvision:odd")


def test_timm_weights_come_from_the_hugging_face_cache_offline(monkeypatch, tmp_path: Path):
    """Where timm is installed (it is not a dependency): its resnet18 from a placed hub cache, into convscope's."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    # huggingface_hub reads its cache folder once, on import.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    repo, commit = tmp_path / "hub" / "models--timm--resnet18.a1_in1k", "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, repo / "snapshots" / commit / "model.safetensors")
    pretrained = load_pretrained("timm:resnet18")
    assert pretrained.weights == "resnet18.a1_in1k" and pretrained.categories[:2] == ["tench", "goldfish"]
    assert (pretrained.resize, pretrained.crop) == (235, 224)  # timm's crop_pct 0.95
    model = create_model("resnet18", num_classes=3, inputs={"in_channels": 3, "image_size": (64, 64)})
    report = load_initial_weights(model, "timm:resnet18", classes=["a", "b", "c"])
    assert len(report.left) == 2 and torch.equal(model.state_dict()["features.conv1.weight"], state["conv1.weight"])
