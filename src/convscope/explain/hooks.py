"""Temporary changes to a model that an attribution needs for one call, always undone in ``finally``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

# Elementwise activations whose output is positive exactly where their input is (so "the unit fired" means
# output > 0 for each of them). captum's GuidedBackprop overrides nn.ReLU only; the others get the same rule here.
GATED_ACTIVATIONS = (nn.GELU, nn.SELU, nn.ELU, nn.CELU, nn.LeakyReLU, nn.SiLU)


@contextmanager
def inplace_off(model: nn.Module) -> Iterator[None]:
    """Run without in-place activations (``nn.ReLU(inplace=True)`` and the like).

    An in-place activation overwrites the output of the layer before it, which backward hooks and
    Grad-CAM's saved activations still need (pytorch-grad-cam #147); the flag is restored afterwards.
    """
    switched = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for module in switched:
        module.inplace = False
    try:
        yield
    finally:
        for module in switched:
            module.inplace = True


class _GuidedGate(torch.autograd.Function):
    """Identity forward; backward passes the gradient only where it is positive and the unit fired."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, output: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(output)
        return output.view_as(output)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad.clamp(min=0) * (output > 0)


def _gate_output(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    return _GuidedGate.apply(output)


@contextmanager
def guided_gates(model: nn.Module) -> Iterator[list[str]]:
    """Guided backpropagation's rule on every non-ReLU activation of ``GATED_ACTIVATIONS``.

    The gradient reaching the activation's output is kept only where it is positive and the output is
    positive; the activation's own derivative then applies. For a ReLU this is exactly
    Springenberg et al.'s rule (``[x > 0] * relu(grad)``), which captum applies to ReLU modules itself.
    Yields the type names of the activations that were gated.
    """
    gated = [m for m in model.modules() if isinstance(m, GATED_ACTIVATIONS)]
    handles = [m.register_forward_hook(_gate_output) for m in gated]
    try:
        yield sorted({type(m).__name__ for m in gated})
    finally:
        for handle in handles:
            handle.remove()
