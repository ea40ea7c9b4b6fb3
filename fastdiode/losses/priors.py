"""Image priors of the inversion objective (method.md §2.2): total variation and the image-norm prior."""
from __future__ import annotations

import torch
from torch import nn

from fastdiode.ops.tensor_checks import upcast
from fastdiode.ops.tv import tv_prior

__all__ = ["TVPrior", "image_norm_prior", "tv_prior"]


def image_norm_prior(x: torch.Tensor) -> torch.Tensor:
    """DeepInversion's l2 prior: the mean over images of ||x_i||_2 (fp32)."""
    return torch.linalg.vector_norm(upcast(x).flatten(1), dim=1).mean()


class TVPrior(nn.Module):
    """Weighted TV prior ``l1 * TV_L1 + l2 * TV_L2`` (DIODE: l1 = 75, l2 = 0); both terms come from one pass.
    After a call, :attr:`values` holds the detached, unweighted ``[TV_L1, TV_L2]`` (for logging, no sync)."""

    def __init__(self, l1: float = 75.0, l2: float = 0.0, backend: str | None = None):
        super().__init__()
        self.l1, self.l2, self.backend = l1, l2, backend
        self.values: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tv_l1, tv_l2 = tv_prior(x, backend=self.backend)
        self.values = torch.stack([tv_l1, tv_l2]).detach()
        return self.l1 * tv_l1 + self.l2 * tv_l2

    def extra_repr(self) -> str:
        return f"l1={self.l1}, l2={self.l2}"
