"""Muon for convolution filters, SGD for the other parameters, in one optimiser (airbench94_muon's split:
github.com/KellerJordan/cifar10-airbench).

Why not ``torch.optim.Muon``: it takes 2-D matrices only, and airbench's conv filters are 4-D. Here a filter
bank ``out x in x k x k`` is orthogonalised as the matrix ``out x (in k k)`` with torch's own Newton-Schulz
iteration. Before each step the bank is rescaled to norm sqrt(out), as airbench does: a filter followed by batch
norm computes the same function at any scale, so fixing the scale fixes the step's relative size and stands in for
weight decay. So it suits networks whose every conv feeds a batch norm (fastnet, the torchvision ResNets);
elsewhere the renormalisation changes what the network computes. The 2-D weights (linear layers) and 1-D ones
(biases, batch-norm parameters) are updated by ``torch.optim.sgd.sgd`` at their own learning rates, with
decoupled weight decay.

One optimiser rather than two keeps the engine's single scheduler, checkpoint and logged lr as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim._muon import _zeropower_via_newtonschulz
from torch.optim.sgd import sgd

from convscope.config import OptimConfig

# airbench94_muon's iteration: torch's default coefficients, 3 steps rather than 5 (its small filters need no
# more; each step is three matrix products per filter bank).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 3
NS_EPS = 1e-7


class MuonSGD(Optimizer):
    """Param groups carry ``muon`` (bool): True groups take Muon steps (``lr``, ``momentum``, always Nesterov),
    the others SGD steps (``lr``, ``momentum``, ``nesterov``, ``weight_decay`` as in ``torch.optim.SGD``)."""

    def __init__(self, params: Iterable[dict[str, Any]], lr: float, momentum: float, nesterov: bool) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": 0.0,
                                  "muon": False})  # fmt: skip

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:  # Lightning passes its forward and backward as a closure
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["muon"]:
                self._muon_step(group, params)
                continue
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            sgd(params, [p.grad for p in params], buffers, weight_decay=group["weight_decay"],
                momentum=group["momentum"], lr=group["lr"], dampening=0.0, nesterov=group["nesterov"],
                maximize=False)  # fmt: skip
            for p, buffer in zip(params, buffers, strict=True):
                self.state[p]["momentum_buffer"] = buffer
        return loss

    def _muon_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        momentum = group["momentum"]
        for p in params:
            buffer = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
            buffer.mul_(momentum).add_(p.grad)
            direction = p.grad.add(buffer, alpha=momentum)  # Nesterov
            p.mul_(len(p) ** 0.5 / p.norm().clamp_min(NS_EPS))  # an all-zero bank stays zero
            matrix = direction.reshape(len(p), -1)
            update = _zeropower_via_newtonschulz(matrix, NS_COEFFICIENTS, NS_STEPS, NS_EPS)
            p.add_(update.view(p.shape).to(p.dtype), alpha=-group["lr"])


def muon_groups(cfg: OptimConfig, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Split each given group by tensor rank: filters (3-D and up) -> Muon at the group's lr; matrices -> SGD at
    ``linear_lr``; vectors -> SGD at ``bias_lr``. A group's own lr (a fine-tuning phase's layer decay) scales all
    three by its ratio to ``cfg.lr``. Filters come first, so the logged lr is the filters'."""
    given = list(params)
    groups = given if given and isinstance(given[0], dict) else [{"params": given}]
    filters, others = [], []
    for group in groups:
        ratio = group.get("lr", cfg.lr) / cfg.lr
        tensors = [p for p in group["params"] if p.requires_grad]
        ranked = {
            "filters": [p for p in tensors if p.ndim >= 3],
            "linear": [p for p in tensors if p.ndim == 2],
            "bias": [p for p in tensors if p.ndim <= 1],
        }
        if ranked["filters"]:
            filters.append({"params": ranked["filters"], "lr": cfg.lr * ratio, "muon": True,
                            "momentum": cfg.muon_momentum, "nesterov": True})  # fmt: skip
        for kind, base_lr in (("linear", cfg.linear_lr), ("bias", cfg.bias_lr)):
            if ranked[kind]:
                lr = base_lr * ratio
                # weight_decay is the fraction taken off per step at the full lr: torch's SGD takes lr * wd.
                others.append({"params": ranked[kind], "lr": lr, "muon": False, "momentum": cfg.momentum,
                               "nesterov": cfg.nesterov, "weight_decay": cfg.weight_decay / lr})  # fmt: skip
    return filters + others
