"""The seeds' model zoo: torchvision networks with small-image stems, the fully convolutional ResNet, Monster,
the transfer head, and convolutionize."""

import pytest
import torch
import torchvision
from torch import nn

from convscope.errors import UserError
from convscope.models import create_model
from convscope.models.convolutionize import convolutionize
from convscope.models.summary import layer_summary, parse_input_size


def _model(name: str, size=(32, 32), in_channels: int = 3, classes: int = 10, **options) -> nn.Module:
    return create_model(name, num_classes=classes, inputs={"in_channels": in_channels, "image_size": size}, **options)


@pytest.mark.parametrize(("stem", "side"), [("imagenet", 2), ("small-pool", 4), ("small", 8)])
def test_resnet_stems_set_the_resolution_of_the_body(stem: str, side: int) -> None:
    model = _model("resnet18", size=(64, 64), stem=stem).eval()
    assert model.features(torch.zeros(1, 3, 64, 64)).shape == (1, 512, side, side)


def test_resnet18_imagenet_stem_is_torchvision_resnet18_under_convscope_names() -> None:
    ours = _model("resnet18", classes=1000)
    theirs = torchvision.models.resnet18(weights=None)
    names = {k.removeprefix("features.").removeprefix("head.") for k in ours.state_dict()}
    assert names == set(theirs.state_dict())
    assert sum(p.numel() for p in ours.parameters()) == 11_689_512  # the seed's torchinfo total


def test_transfer_head_is_seed004s() -> None:
    head = _model("resnet18", classes=2, head="transfer", hidden=256).head
    kinds = [type(layer) for layer in head]
    assert kinds == [nn.AdaptiveAvgPool2d, nn.Flatten, nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU,
                     nn.BatchNorm1d, nn.Dropout, nn.Linear]  # fmt: skip
    assert (head[4].in_features, head[4].out_features, head[8].out_features) == (512, 256, 2)


def test_alexnet_needs_the_small_stem_on_small_images() -> None:
    assert _model("alexnet", size=(32, 32)).features[0].kernel_size == (3, 3)  # auto
    assert _model("alexnet", size=(224, 224)).features[0].kernel_size == (11, 11)
    with pytest.raises(UserError, match="too small for model 'alexnet'"):
        _model("alexnet", size=(32, 32), stem="imagenet")


def test_fcn_resnet18_gives_class_maps_at_any_size_and_pools_them_to_logits() -> None:
    model = _model("fcn-resnet18").eval()
    x = torch.randn(2, 3, 32, 32)
    maps = model.class_maps(x)
    assert maps.shape == (2, 10, 32, 32)
    smooth_max = 2 * torch.log(torch.exp(0.5 * maps).mean(dim=(2, 3)))  # seed 000's aggregation
    torch.testing.assert_close(model(x), smooth_max, rtol=1e-4, atol=1e-4)
    assert model.class_maps(torch.randn(1, 3, 48, 40)).shape == (1, 10, 48, 40)
    first = model.features.conv1
    assert (first.kernel_size, first.stride) == ((3, 3), (1, 1))
    assert isinstance(model.features.maxpool, nn.Upsample)


def test_monster_freezes_only_its_borrowed_stem() -> None:
    model = _model("monster", blocks=2, channels=16)
    stem = model.backbone()
    assert [type(m) for m in stem] == [nn.Conv2d, nn.ReLU]
    assert stem[0].kernel_size == (11, 11) and stem[0].stride == (4, 4)  # AlexNet's features[0]
    assert model.state_dict()["features.0.weight"].shape == torchvision.models.alexnet().features[0].weight.shape
    assert sum(1 for m in model.features[4] if type(m).__name__ == "ResBlock") == 2


@pytest.mark.parametrize(
    ("name", "side", "options"),
    # AlexNet at its own size: on small images its 6x6 adaptive pooling enlarges the maps, which no conv does.
    [("lenet5", 32, {}), ("alexnet", 224, {}), ("resnet18", 32, {"head": "transfer"}), ("monster", 32, {"blocks": 1})],
)
def test_convolutionize_gives_the_same_scores_and_a_map_on_larger_images(name: str, side: int, options: dict) -> None:
    torch.manual_seed(0)
    model = _model(name, size=(side, side), **options).eval()
    x = torch.randn(2, 3, side, side)
    conv = convolutionize(model, (3, side, side))
    assert not any(isinstance(m, nn.Linear) for m in conv.modules())
    out = conv(x)
    assert out.shape == (2, 10, 1, 1)
    torch.testing.assert_close(out.flatten(1), model(x), rtol=1e-4, atol=1e-5)
    larger = conv(torch.randn(1, 3, side + 64, side + 48))
    assert larger.shape[:2] == (1, 10) and larger.shape[2] > 1 and larger.shape[3] > 1


def test_convolutionize_slides_the_classifier() -> None:
    """Each position of the map is the classifier applied to the matching window of the larger image."""
    torch.manual_seed(0)
    model = _model("lenet5", size=(28, 28), in_channels=1).eval()
    conv = convolutionize(model, (1, 28, 28))
    big = torch.randn(1, 1, 36, 28)
    scores = conv(big)  # windows move by 4 px (two 2x max-pools)
    assert scores.shape == (1, 10, 3, 1)
    torch.testing.assert_close(scores[0, :, 2, 0], model(big[:, :, 8:36])[0], rtol=1e-4, atol=1e-5)


def test_layer_summary_shows_output_shapes() -> None:
    text = layer_summary("resnet18", (3, 49, 49), 2)
    assert "[2, 512, 2, 2]" in text and "11,177,538" in text  # the seed's 2x2 maps at 49x49
    assert parse_input_size("1,28,28") == (1, 28, 28)
    with pytest.raises(UserError, match="C,H,W"):
        parse_input_size("28x28")


def test_fcn_small_keeps_output_stride_maps_and_grows_its_receptive_field_by_dilation() -> None:
    model = _model("fcn-small", size=(64, 64), in_channels=1, widths=[8, 8, 8, 8], output_stride=4, pooling="none")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 1, 1] and [c.dilation[0] for c in convs] == [1, 1, 2, 4]
    assert model.features(torch.zeros(1, 1, 64, 64)).shape == (1, 8, 16, 16)
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 10, 64, 64)  # pooling "none": the maps, upsampled
    with pytest.raises(UserError, match="output_stride = 8 needs at least 3 widths"):
        _model("fcn-small", size=(64, 64), widths=[8, 8], output_stride=8)
