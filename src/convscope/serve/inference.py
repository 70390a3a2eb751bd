"""The fast inference path that ``evaluate``, ``predict`` and the inference benchmark share.

Its levers, each set by :class:`InferenceConfig`: channels_last memory, bf16 autocast on a CPU or GPU that has
it, and batch norms folded into the convolutions before them (exact in fp32). ``torch.compile`` is not used.
What each lever measured: benchmarks/README.md, "Measurements behind the code".
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from convscope.errors import UserError

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class InferenceConfig:
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    channels_last: bool = False
    batch_size: int = 1024
    fold_batchnorm: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"precision {self.precision!r} is not one of: {', '.join(PRECISIONS)}")
        if self.batch_size < 1:
            raise UserError(f"batch size {self.batch_size}: expected an integer >= 1")


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with each batch norm that directly follows a convolution folded into it.

    torch.fx traces the model; one it cannot trace (data-dependent control flow) is returned unchanged, as a
    copy: folding is only a speed-up.
    """
    from torch.fx.experimental.optimization import fuse

    model = copy.deepcopy(model).eval()
    try:
        fused = fuse(model)
    except Exception:  # any tracing failure: keep the unfused model
        return model
    # The traced graph keeps the layers, not the plain attributes a task reads to decode outputs (a detector's
    # grid or stride): carry those over.
    for key, value in vars(model).items():
        if not key.startswith("_") and isinstance(value, int | float | str | tuple) and not hasattr(fused, key):
            setattr(fused, key, value)
    return fused


def prepare_model(model: nn.Module, config: InferenceConfig, device: torch.device) -> nn.Module:
    """``model`` ready for :func:`batched`: eval mode, on ``device``, folded and in channels_last as configured.

    The given model is left as it was (folding works on a copy).
    """
    prepared = fold_batchnorm(model) if config.fold_batchnorm else model
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    return prepared.to(device=device, memory_format=memory_format).eval()


def autocast(device: torch.device, precision: str) -> AbstractContextManager[object]:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def model_input(x: torch.Tensor, config: InferenceConfig, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if config.channels_last and x.dim() == 4 and x.is_floating_point():
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def chunks(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


def batched(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, config: InferenceConfig, device: torch.device
) -> torch.Tensor:
    """``forward`` over ``x`` in batches of ``config.batch_size`` under inference mode and the configured
    precision; the outputs as float32 on the CPU, concatenated."""
    outputs = []
    with torch.inference_mode(), autocast(device, config.precision):
        for part in chunks(x, config.batch_size):
            outputs.append(forward(model_input(part, config, device)).float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)
