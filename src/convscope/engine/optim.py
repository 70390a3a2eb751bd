"""Optimisers, per-step learning-rate schedules and the device, built from the configuration."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import SGD, Adam, AdamW, Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    SequentialLR,
)

from convscope.config import DEVICES, OptimConfig
from convscope.engine.muon import MuonSGD, muon_groups
from convscope.errors import UserError

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


def build_optimizer(cfg: OptimConfig, params: Params) -> Optimizer:
    """``params`` is an iterable of tensors or of param groups (a group's own ``lr`` overrides ``cfg.lr``)."""
    cfg.validate()
    if cfg.name == "muon":
        return MuonSGD(muon_groups(cfg, params), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "sgd":
        return SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    betas = (cfg.momentum, cfg.beta2)
    if cfg.name == "adam":
        return Adam(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    return AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)


def build_scheduler(cfg: OptimConfig, optimizer: Optimizer, steps_per_epoch: int, epochs: int) -> LRScheduler | None:
    """The schedule, to be stepped once per optimisation step (not per epoch)."""
    total = steps_per_epoch * epochs
    if cfg.scheduler == "none":
        return None
    if cfg.scheduler == "onecycle":
        return OneCycleLR(
            optimizer,
            # Each group peaks at its own lr, so per-group learning rates keep their ratios.
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total,
            pct_start=cfg.pct_start,
            div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor,
            # OneCycleLR would switch momentum on for plain SGD; leave momentum-free SGD alone. Muon's groups
            # hold two momenta (filters', the rest's), which one cycle would overwrite.
            cycle_momentum=not (cfg.name == "sgd" and cfg.momentum == 0) and cfg.name != "muon",
        )
    warmup = round(cfg.warmup_fraction * total)
    if cfg.scheduler == "cosine":
        main: LRScheduler = CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    elif cfg.scheduler == "linear":  # airbench94_muon's: straight down to 0 at the last step
        main = LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=max(1, total - warmup))
    else:
        # Decay at epoch boundaries, counted from the end of the warm-up (SequentialLR restarts the count there).
        boundaries = range(cfg.step_epochs * steps_per_epoch, total, cfg.step_epochs * steps_per_epoch)
        if warmup and boundaries and boundaries[0] <= warmup:
            raise UserError(
                f"optim.warmup_fraction = {cfg.warmup_fraction} lasts past the first step decay "
                f"(after {cfg.step_epochs} epoch(s)); shorten the warm-up or raise optim.step_epochs"
            )
        main = MultiStepLR(optimizer, milestones=[b - warmup for b in boundaries], gamma=cfg.gamma)
    if not warmup:
        return main
    # Linear ramp lr/(w+1), 2lr/(w+1), ..., w*lr/(w+1), then the main schedule from the full lr.
    ramp = LinearLR(optimizer, start_factor=1 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def current_lr_momentum(optimizer: Optimizer) -> tuple[float, float]:
    """lr and momentum (SGD momentum or Adam beta1) of param group 0."""
    group = optimizer.param_groups[0]
    momentum = group["betas"][0] if "betas" in group else group.get("momentum", 0.0)
    return float(group["lr"]), float(momentum)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; naming an unavailable device is a UserError."""
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if name not in DEVICES:
        raise UserError(f"train.device = {name!r} is not one of: {', '.join(DEVICES)}")
    if not available[name]:
        usable = ", ".join(["auto", *(d for d in ("cpu", "cuda", "mps") if available[d])])
        raise UserError(f"train.device = {name!r} is not available on this machine; usable: {usable}")
    return torch.device(name)
