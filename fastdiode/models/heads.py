"""YOLO head layers and the view of a model the YOLO loss and decoding need: its heads, in output order."""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class YoloHead(nn.Module):
    """Reshapes a detection conv's output (B, A*(5+C), H, W) into the raw map (B, A, H, W, 5+C)."""

    def __init__(self, anchors: list[tuple[float, float]], num_classes: int, stride: int):
        super().__init__()
        self.num_classes, self.stride = num_classes, stride
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32))  # pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return x.view(b, len(self.anchors), 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2)


class HasYoloHeads(Protocol):
    """A model whose raw outputs are one (B, A, H, W, 5 + C) map per YOLO head, in ``heads`` order."""

    heads: list[YoloHead]
