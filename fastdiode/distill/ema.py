"""An exponential moving average of a model's weights (the authors' code evaluates the EMA student)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """``ema = d * ema + (1 - d) * model`` after every optimiser step, with the decay ramped up as
    ``decay * (1 - exp(-updates / ramp))`` so the early, fast-moving weights are not averaged in for long.
    Float buffers (BN running statistics) are averaged too; integer buffers are copied."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, ramp: float = 2000.0):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.ramp, self.updates = decay, ramp, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.ramp))
        ema = self.module.state_dict()
        floats, sources = [], []
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                floats.append(ema[name])
                sources.append(value.detach())
            else:
                ema[name].copy_(value)
        torch._foreach_lerp_(floats, sources, 1.0 - d)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
