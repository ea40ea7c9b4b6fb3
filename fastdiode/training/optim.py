"""The one optimiser factory of the trainers (timm's idea): two parameter groups, weights with decay and BN
parameters and biases without, Adam or SGD (Nesterov) by name, the fused implementation on CUDA and foreach
elsewhere; and the learning rate of a step written into every group."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from fastdiode.runtime.schedule import lr_at
from fastdiode.training.config import OptimConfig


def param_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    """Weights (ndim > 1) with ``weight_decay``; BN parameters and biases without."""
    params = [p for p in params if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """``cfg.name`` over :func:`param_groups` of ``params``, at ``cfg.lr`` (the loop sets each step's lr)."""
    groups = param_groups(params, cfg.weight_decay)
    impl = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), **impl)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, **impl)


def set_lr(optimizer: torch.optim.Optimizer, cfg: OptimConfig, step: int, steps: int) -> float:
    """Write the learning rate of ``step`` of ``steps`` (warmup, then cosine decay) into every group."""
    lr = lr_at(step, steps, cfg.lr, cfg.lr_min, cfg.warmup)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
