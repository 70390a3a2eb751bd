"""What ``convscope models`` shows: each registered network's parameter count and, for one input size, the
output shape of every layer (``torchinfo.summary``, as the seeds print it)."""

from __future__ import annotations

import inspect

import torch
import torchinfo

from convscope.errors import UserError
from convscope.models import MODELS, create_model, list_models


def takes_images(name: str) -> bool:
    return "image_size" in inspect.signature(MODELS.get(name)).parameters


def _build(name: str, input_size: tuple[int, int, int], num_classes: int) -> torch.nn.Module:
    channels, height, width = input_size
    return create_model(name, num_classes=num_classes, inputs={"in_channels": channels, "image_size": (height, width)})


def parameter_table(input_size: tuple[int, int, int], num_classes: int) -> list[tuple[str, str]]:
    """(name, parameter count or why there is none) for every image model at ``input_size`` (C, H, W)."""
    rows = []
    for name in list_models():
        if not takes_images(name):
            rows.append((name, "(not an image model)"))
            continue
        try:
            model = _build(name, input_size, num_classes)
        except UserError as e:
            rows.append((name, f"({e})"))
            continue
        rows.append((name, f"{sum(p.numel() for p in model.parameters()):,}"))
    return rows


def layer_summary(name: str, input_size: tuple[int, int, int], num_classes: int, depth: int = 3) -> str:
    """The torchinfo table of ``name`` on a batch of two ``input_size`` images: layers, output shapes, parameters."""
    if not takes_images(name):
        raise UserError(f"model {name!r} does not take images; --input-size describes images (C,H,W)")
    model = _build(name, input_size, num_classes)
    statistics = torchinfo.summary(
        model,
        input_size=(2, *input_size),  # two: batch norms of 1-D features need more than one sample
        col_names=("output_size", "num_params"),
        depth=depth,
        mode="eval",
        device="cpu",
        verbose=0,
    )
    return str(statistics)


def parse_input_size(text: str) -> tuple[int, int, int]:
    """``"3,32,32"`` -> (3, 32, 32)."""
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise UserError(f"--input-size {text!r}: expected C,H,W as three positive integers, e.g. 3,32,32")
    return values  # type: ignore[return-value]
