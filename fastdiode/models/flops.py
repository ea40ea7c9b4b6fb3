"""Arithmetic cost of a detector: conv FLOPs per image, counted from shapes alone (on the meta device)."""
from __future__ import annotations

import copy

import torch
from torch import nn


def conv_flops(model: nn.Module, size: int, in_channels: int = 3) -> int:
    """Forward FLOPs (2 per multiply-add) of all conv layers of any detector for one size x size image (a copy on
    the meta device runs: shapes only)."""
    shadow = copy.deepcopy(model).to("meta")
    total = 0

    def count(module: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * k * output.numel()

    handles = [m.register_forward_hook(count) for m in shadow.modules() if isinstance(m, nn.Conv2d)]
    shadow(torch.empty(1, in_channels, size, size, device="meta"))
    for h in handles:
        h.remove()
    return total
