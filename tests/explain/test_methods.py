import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convscope.errors import UserError
from convscope.explain.methods import (
    METHODS,
    AttributionMethod,
    FeatureMaps,
    GradCam,
    GuidedBackprop,
    IntegratedGradients,
    black_baseline,
    create_method,
    find_layer,
    method_names,
)
from convscope.models import DETECTORS, PRETEXT_MODELS, create_model, list_models
from convscope.models import MODELS as MODELS_REGISTRY
from tests.explain.helpers import ClassMaps, images, tiny_convnet

ATTRIBUTIONS = ["saliency", "guided-backprop", "gradcam", "integrated-gradients"]


def seed_guided_backprop(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Seed 004's guided backpropagation for one image, with its own ReLU hooks: the reference."""

    def relu_hook_function(module, grad_in, grad_out):
        return (torch.clamp(grad_in[0], min=0.0),)

    hooks = [m.register_backward_hook(relu_hook_function) for m in model.modules() if isinstance(m, nn.ReLU)]
    x = x.clone().requires_grad_(True)
    try:
        model(x)[0, target].backward()
    finally:
        for hook in hooks:
            hook.remove()
    model.zero_grad()
    return x.grad


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
@pytest.mark.parametrize("name", ["lenet5", "cifar-cnn"])
def test_guided_backprop_equals_the_seeds_hooks_on_relu_networks(name: str):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, inputs={"in_channels": 3, "image_size": (28, 28)}).eval()
    x = torch.randn(2, 3, 28, 28)
    maps = GuidedBackprop(model).attribute(x, torch.tensor([3, 7]))
    for i, target in enumerate([3, 7]):
        reference = seed_guided_backprop(model, x[i : i + 1], target).amax(dim=1)[0]
        torch.testing.assert_close(maps[i], reference)
    # The guided rule changed something: the plain gradient differs.
    plain = torch.autograd.grad(model(x.requires_grad_())[0, 3], x)[0][0].amax(dim=0)
    assert not torch.allclose(maps[0], plain)


def test_guided_rule_reaches_gelu_activations():
    torch.manual_seed(0)
    conv, linear = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(2 * 5 * 5, 3)
    model = nn.Sequential(conv, nn.GELU(), nn.Flatten(), linear).eval()
    x, target = torch.randn(1, 1, 5, 5), 1
    method = GuidedBackprop(model)
    got = method.attribute(x, torch.tensor([target]))[0]

    # By hand: the gradient reaching GELU's output, kept where positive and where GELU fired, times GELU'.
    z = conv(x).detach().requires_grad_()
    (gelu_derivative,) = torch.autograd.grad(F.gelu(z).sum(), z)
    upstream = linear.weight[target].detach().view(1, 2, 5, 5)
    at_z = gelu_derivative * upstream.clamp(min=0) * (F.gelu(z) > 0)
    expected = F.conv_transpose2d(at_z, conv.weight.detach(), padding=1)[0, 0]
    torch.testing.assert_close(got, expected)
    assert method.notes and "GELU" in method.notes[0]


def test_gradcam_is_the_gradient_weighted_layer_upsampled():
    model = tiny_convnet()
    x, target = images(2), torch.tensor([0, 2])
    got = GradCam(model).attribute(x, target)

    activations = {}
    handle = model.features[3].register_forward_hook(lambda m, i, out: activations.setdefault("a", out))
    out = model(x)
    handle.remove()
    a = activations["a"]
    (grad,) = torch.autograd.grad(out[torch.arange(2), target].sum(), a)
    cam = (grad.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True).relu()
    expected = F.interpolate(cam, size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(got, expected.detach())


def test_gradcam_layer_is_chosen_printed_and_can_be_overridden():
    model = tiny_convnet()
    default = GradCam(model)
    assert default.layer_name == "features.3" and "features.3" in default.notes[0] and "--layer" in default.notes[0]
    chosen = GradCam(model, layer="features.0")
    assert chosen.layer is model.features[0]
    assert chosen.attribute(images(1), torch.tensor([1])).shape == (1, 8, 8)
    with pytest.raises(UserError, match=r"no layer 'features\.9'.*features\.0, features\.3"):
        find_layer(model, "features.9")


def test_saliency_is_the_absolute_gradient_maximum_over_channels():
    model = tiny_convnet(channels=3)
    x = images(1, channels=3).requires_grad_()
    (grad,) = torch.autograd.grad(model(x)[0, 2], x)
    got = create_method("saliency", model).attribute(x.detach(), torch.tensor([2]))
    torch.testing.assert_close(got[0], grad.abs().amax(dim=1)[0])


def test_integrated_gradients_are_complete_and_batch_size_does_not_matter():
    model = tiny_convnet()
    x, target = images(2), torch.tensor([1, 2])
    baseline = black_baseline([0.5], [0.25])
    small = IntegratedGradients(model, baseline=baseline, steps=64, internal_batch_size=5).attribute(x, target)
    large = IntegratedGradients(model, baseline=baseline, steps=64, internal_batch_size=1000).attribute(x, target)
    torch.testing.assert_close(small, large)
    # Completeness (Sundararajan et al.): the attributions add up to f(x) - f(baseline).
    with torch.no_grad():
        gap = model(x)[torch.arange(2), target] - model(baseline.expand_as(x))[torch.arange(2), target]
    torch.testing.assert_close(small.sum(dim=(1, 2)), gap, rtol=0.02, atol=1e-3)


@pytest.mark.parametrize("name", ATTRIBUTIONS)
def test_a_batch_gives_the_single_image_maps(name: str):
    model = tiny_convnet(channels=3)
    x, target = images(3, channels=3), torch.tensor([2, 0, 1])
    method = create_method(name, model, baseline=black_baseline([0.5] * 3, [0.2] * 3))
    batched = method.attribute(x, target)
    singles = torch.cat([method.attribute(x[i : i + 1], target[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 8, 8)
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-6)
    # Per-image targets are honoured: another class gives another map (pytorch-grad-cam #264).
    assert not torch.allclose(method.attribute(x[:1], torch.tensor([0])), batched[:1])


@pytest.mark.parametrize("name", ATTRIBUTIONS)
def test_in_place_relu_is_handled_and_restored(name: str):
    plain, inplace = tiny_convnet(), tiny_convnet(inplace=True)
    x, target = images(2), torch.tensor([0, 1])
    expected = create_method(name, plain).attribute(x, target)
    got = create_method(name, inplace).attribute(x, target)
    torch.testing.assert_close(got, expected)
    assert all(m.inplace for m in inplace.modules() if isinstance(m, nn.ReLU))


@pytest.mark.parametrize("name", ATTRIBUTIONS)
def test_hooks_are_removed_after_each_call(name: str):
    model = tiny_convnet(act=nn.GELU)
    create_method(name, model).attribute(images(1), torch.tensor([0]))
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks and not getattr(module, "_backward_pre_hooks", {})


def test_attention_reads_the_class_maps_of_a_weakly_supervised_model():
    model = ClassMaps().eval()
    x, target = images(2), torch.tensor([2, 0])
    got = create_method("attention", model).attribute(x, target)
    maps = model(x).detach()
    expected = F.interpolate(maps[torch.arange(2), target].unsqueeze(1), size=(8, 8), mode="bilinear").sigmoid()
    torch.testing.assert_close(got, expected[:, 0])


def test_attention_does_not_apply_to_a_classifier():
    with pytest.raises(UserError, match=r"'attention' does not apply.*class scores \(1 x 3\)"):
        create_method("attention", tiny_convnet()).attribute(images(1), torch.tensor([0]))


def test_feature_maps_follow_the_forward_pass():
    model = tiny_convnet()
    x = images(1)
    stages = FeatureMaps(model).stages(x)
    assert [s.name for s in stages] == [f"features.{i}" for i in range(6)] + ["head.0", "head.2"]  # no Flatten
    assert [s.kind for s in stages][:3] == ["Conv2d", "ReLU", "MaxPool2d"]
    with torch.no_grad():
        torch.testing.assert_close(stages[3].output, model.features[:4](x)[0])
        torch.testing.assert_close(stages[-1].output, model(x)[0])


def test_registry_lists_every_method_and_rejects_bad_options():
    assert method_names() == sorted(
        ["attention", "feature-maps", "gradcam", "guided-backprop", "integrated-gradients", "saliency"]
    )
    assert all(issubclass(METHODS.get(n), AttributionMethod) for n in method_names() if n != "feature-maps")
    with pytest.raises(UserError, match="unknown explanation method 'lime'; expected one of: attention, feature-maps"):
        create_method("lime", tiny_convnet())
    with pytest.raises(UserError, match="--layer applies to gradcam only"):
        create_method("saliency", tiny_convnet(), layer="features.0")


def test_black_baseline_is_zero_pixels_after_normalisation():
    baseline = black_baseline([0.5, 0.4, 0.3], [0.25, 0.2, 0.1])
    torch.testing.assert_close(baseline.flatten(), torch.tensor([-2.0, -2.0, -3.0]))


def image_models() -> list[str]:
    names = [n for n in list_models() if n not in PRETEXT_MODELS and n not in DETECTORS]
    return [n for n in names if "in_channels" in inspect.signature(MODELS_REGISTRY.get(n)).parameters]


@pytest.mark.parametrize("name", image_models())
def test_every_registered_image_model_can_be_explained(name: str):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, inputs={"in_channels": 3, "image_size": (32, 32)}).eval()
    x, target = torch.randn(1, 3, 32, 32), torch.tensor([2])
    # The two methods that depend on the architecture: its activations and its last convolution.
    for method in ("guided-backprop", "gradcam"):
        maps = create_method(method, model).attribute(x, target)
        assert maps.shape == (1, 32, 32) and maps.isfinite().all(), method
        assert method == "gradcam" or maps.abs().sum() > 0, method  # a ReLU-ed CAM may be 0 at random weights
    assert FeatureMaps(model).stages(x)
