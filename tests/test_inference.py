"""The fast inference path: folding batch norms into the convolutions changes no output in fp32."""

import pytest
import torch
from torch import nn

from convscope.models import create_model
from convscope.serve.inference import InferenceConfig, batched, fold_batchnorm, prepare_model


def _trained_looking(name: str) -> nn.Module:
    """A model whose batch norms hold statistics and affine weights far from their initial 0/1."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, inputs={"in_channels": 3, "image_size": (32, 32)})
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1.0, 1.0)
            module.running_var.uniform_(0.5, 2.0)
            if module.affine:
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["fastnet-small", "fcn-small"])
def test_folded_batchnorm_model_equals_the_unfolded_one_in_fp32(name: str):
    model = _trained_looking(name)
    folded = fold_batchnorm(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) < sum(
        isinstance(m, nn.BatchNorm2d) for m in model.modules()
    )  # something was folded
    x = torch.randn(8, 3, 32, 32)
    with torch.inference_mode():
        expected, got = model(x), folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert model.training is False and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # left as it was


def test_the_fp32_fast_path_with_folding_gives_the_eager_outputs():
    model = _trained_looking("fastnet-small")
    x = torch.randn(20, 3, 32, 32)
    device = torch.device("cpu")
    eager = batched(model, x, InferenceConfig(fold_batchnorm=False, channels_last=False, batch_size=7), device)
    fast = batched(
        prepare_model(model, InferenceConfig(fold_batchnorm=True, channels_last=True), device),
        x,
        InferenceConfig(fold_batchnorm=False, channels_last=True, batch_size=7),
        device,
    )
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-5)
