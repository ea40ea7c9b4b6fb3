"""Arithmetic cost of a detector: conv FLOPs per image, counted from shapes alone (on the meta device)."""
from __future__ import annotations

import torch
from torch import nn

from fastdiode.models.darknet import Darknet


def conv_flops(model: Darknet, size: int) -> int:
    """Forward FLOPs (2 per multiply-add) of all conv layers for one size x size image."""
    with torch.device("meta"):
        shadow = Darknet(model.layer_specs, in_channels=model.blocks[0].conv.in_channels, name=model.name)
    total = 0

    def count(module: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * k * output.numel()

    handles = [m.register_forward_hook(count) for m in shadow.modules() if isinstance(m, nn.Conv2d)]
    shadow(torch.empty(1, shadow.blocks[0].conv.in_channels, size, size, device="meta"))
    for h in handles:
        h.remove()
    return total
