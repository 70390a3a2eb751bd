"""Seed 002's ``convolutionize``: a classifier's linear layers as equivalent convolutions.

A Linear layer reading the flattened h x w maps of a body is a Conv2d with an h x w kernel; the Linear
layers after it are 1x1 convolutions. Global pooling to 1x1 becomes pooling with the training map's size
and stride 1. The result returns the same scores as N x classes x 1 x 1 on the training size, and slides
over a larger image to give a map of class scores (the basis of fully convolutional networks).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from convscope.errors import UserError
from convscope.models.layers import ConvNet, Scale

_ELEMENTWISE = (nn.ReLU, nn.GELU, nn.SELU, nn.ELU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Identity,
                Scale)  # fmt: skip


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The layers of nested Sequentials, in order."""
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _leaves(child)]
    return [module]


def _linear_as_conv(linear: nn.Linear, shape: torch.Size) -> nn.Conv2d:
    channels, height, width = shape
    if channels * height * width != linear.in_features:
        raise UserError(f"a Linear layer takes {linear.in_features} inputs but meets {channels}x{height}x{width} maps")
    conv = nn.Conv2d(channels, linear.out_features, (height, width), bias=linear.bias is not None)
    with torch.no_grad():
        # Flatten orders a map channel-major, then row, then column: exactly a conv kernel's layout.
        conv.weight.copy_(linear.weight.view(conv.weight.shape))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def _batchnorm1d_as_2d(norm: nn.BatchNorm1d) -> nn.BatchNorm2d:
    converted = nn.BatchNorm2d(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
    converted.load_state_dict(norm.state_dict())
    return converted


def convolutionize(model: ConvNet, input_size: tuple[int, int, int]) -> ConvNet:
    """A copy of ``model`` whose head has no Linear layer, for inputs of ``input_size`` (C, H, W) and larger.

    Its output is N x classes x h x w: 1 x 1 on ``input_size``, more on larger images. The copy is in eval
    mode (batch norms use their running statistics, as a converted BatchNorm1d must).
    """
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        x = model.features(torch.zeros(1, *input_size))
    layers: list[nn.Module] = []
    for layer in _leaves(model.head):
        if isinstance(layer, nn.Flatten):
            continue  # maps stay maps
        if isinstance(layer, nn.Linear):
            layer = _linear_as_conv(layer, x.shape[1:])
        elif isinstance(layer, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            size = tuple(x.shape[-2:])
            if layer(x).shape[-2:] == size:
                layer = nn.Identity()  # pools to the size it gets: nothing to do on the training size
            elif layer(x).shape[-2:] == (1, 1):
                pool = nn.AvgPool2d if isinstance(layer, nn.AdaptiveAvgPool2d) else nn.MaxPool2d
                layer = pool(size, stride=1)
            else:
                raise UserError(f"cannot convolutionize {layer}: it resizes {size} maps to another size")
        elif isinstance(layer, nn.BatchNorm1d):
            layer = _batchnorm1d_as_2d(layer).eval()
        elif not isinstance(layer, _ELEMENTWISE):
            raise UserError(f"cannot convolutionize a head holding {type(layer).__name__}")
        layers.append(layer)
        with torch.no_grad():
            x = layer(x)
    return ConvNet(model.features, nn.Sequential(*layers)).eval()
