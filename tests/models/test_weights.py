"""transfer.init: weights matched by name and shape from run directories, torchvision .pth and safetensors;
nothing in a file is ever executed."""

import os

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from convscope.errors import UserError
from convscope.models import create_model
from convscope.models.weights import load_initial_weights


def _resnet(classes: int = 10, in_channels: int = 3):
    return create_model("resnet18", num_classes=classes, inputs={"in_channels": in_channels, "image_size": (32, 32)})


def test_torchvision_state_dict_loads_under_convscope_names(tmp_path) -> None:
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = _resnet().eval()
    report = load_initial_weights(model, path)
    assert not report.left and report.unused == 0
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), source(x))


def test_head_for_another_class_count_is_left_and_listed(tmp_path) -> None:
    source = torchvision.models.resnet18(weights=None)  # 1000 classes
    path = tmp_path / "imagenet.safetensors"
    save_file(source.state_dict(), path)
    model = _resnet(classes=2)
    before = model.head.fc.weight.clone()
    report = load_initial_weights(model, path)
    assert sorted(k.split(" ")[0] for k in report.left) == ["head.fc.bias", "head.fc.weight"]
    assert "(1000, 512)" in report.describe() and "loaded 120 of 122" in report.describe()
    assert torch.equal(model.head.fc.weight, before)
    torch.testing.assert_close(model.features.conv1.weight, source.conv1.weight)


def test_run_directory_of_other_classes_gives_only_its_body(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    trained = _resnet(classes=2)
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, run / "model.safetensors")
    (run / "run.json").write_text('{"classes": ["cat", "dog"]}')
    same = _resnet(classes=2)
    assert not load_initial_weights(same, run, classes=["cat", "dog"]).left
    other = _resnet(classes=2)
    report = load_initial_weights(other, run, classes=["ship", "truck"])
    assert [k.split(" ")[0] for k in report.left] == ["head.fc.weight", "head.fc.bias"]
    assert "other classes" in report.left[0]


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p, "does not exist"),
        (lambda p: (torch.save([torch.zeros(2)], p), p)[1], "not a state dict"),
        (lambda p: (torch.save({"w": _RunsCode()}, p), p)[1], "would run code.*posix.system"),
        (lambda p: (p.write_bytes(b"not a torch file"), p)[1], "not a torch state dict"),
        (lambda p: (torch.save({"conv.weight": torch.zeros(3, 3)}, p), p)[1], "none of its 1 tensors fits"),
        (lambda p: (p.mkdir(), p)[1], "not a finished run directory"),
    ],
    ids=["missing", "list", "pickle", "garbage", "shapes", "folder"],
)
def test_bad_init_files_are_user_errors_naming_the_file(tmp_path, make, fragment: str) -> None:
    path = make(tmp_path / "weights.pth")
    with pytest.raises(UserError, match=fragment) as error:
        load_initial_weights(_resnet(), path)
    assert "weights.pth" in str(error.value)
