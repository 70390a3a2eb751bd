"""Model registry: name -> constructor (the timm pattern).

Every constructor takes ``num_classes``, the shape of its input (``in_channels, image_size`` for
images, ``vocab_size, max_len`` for texts) and its own options, and returns a
:class:`~convscope.models.layers.ConvNet`: ``features`` (the convolutional body) and ``head``
(the classifier), with forward = ``head(features(x))`` returning raw logits.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from convscope.errors import UserError
from convscope.models import charcnn, detect, fastnet, fcn, monster, seeds, splitbrain, torchvision_nets
from convscope.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")

# Registered here rather than by decorators in each module, so the list of names lives in one place
# and the modules do not import this package back.
MODELS.register("selu-lenet")(seeds.selu_lenet)
MODELS.register("lenet5")(seeds.lenet5)
MODELS.register("cifar-cnn")(seeds.cifar_cnn)
MODELS.register("fastnet")(fastnet.fastnet)
MODELS.register("fastnet-small")(fastnet.fastnet_small)
MODELS.register("char-cnn")(charcnn.char_cnn)
MODELS.register("alexnet")(torchvision_nets.alexnet)
MODELS.register("resnet18")(torchvision_nets.resnet18)
MODELS.register("resnet34")(torchvision_nets.resnet34)
MODELS.register("resnet50")(torchvision_nets.resnet50)
MODELS.register("fcn-resnet18")(fcn.fcn_resnet18)
MODELS.register("fcn-small")(fcn.fcn_small)
MODELS.register("monster")(monster.monster)
MODELS.register("splitbrain")(splitbrain.splitbrain)
MODELS.register("splitbrain-classifier")(splitbrain.splitbrain_classifier)
MODELS.register("yolo-grid")(detect.yolo_grid)
MODELS.register("fastdet")(detect.fastdet)

# Networks trained on a pretext task (they output no class scores): not classifiers to explain or evaluate.
PRETEXT_MODELS = ("splitbrain",)
# Networks whose outputs are boxes on a grid, not one score per class: no class to explain.
DETECTORS = ("yolo-grid", "fastdet")

# What the data decides rather than the recipe.
INPUT_ARGUMENTS = ("num_classes", "in_channels", "image_size", "vocab_size", "max_len")


def model_options(name: str) -> dict[str, Any]:
    """The options model ``name`` accepts, with their defaults."""
    params = inspect.signature(MODELS.get(name)).parameters
    return {k: p.default for k, p in params.items() if k not in INPUT_ARGUMENTS}


def create_model(name: str, *, num_classes: int, inputs: dict[str, Any], **options: Any) -> nn.Module:
    """Build model ``name`` for ``inputs`` (the data's shape, e.g. ``in_channels`` and ``image_size``).

    An option it does not take is a UserError naming the ones it does.
    """
    constructor = MODELS.get(name)
    expected = [k for k in inspect.signature(constructor).parameters if k in INPUT_ARGUMENTS and k != "num_classes"]
    for key in options:
        if key in INPUT_ARGUMENTS:  # what the data decides is no recipe option
            known = ", ".join(sorted(model_options(name))) or "none"
            raise UserError(f"model {name!r} has no option {key!r}; accepted: {known}")
    if sorted(expected) != sorted(inputs):
        raise UserError(f"model {name!r} takes inputs {expected}, but the data gives {sorted(inputs)}")
    return MODELS.create(name, options, num_classes=num_classes, **inputs)


def list_models() -> list[str]:
    return MODELS.names()
