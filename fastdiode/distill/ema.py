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
        self._pairs: tuple[list, list, list, list] | None = None  # (ema floats, model floats, ema ints, model ints)

    def _tensors(self, model: nn.Module) -> tuple[list, list, list, list]:
        """The matching tensors of both models, gathered once: no per-step dict building."""
        if self._pairs is None:
            ema = self.module.state_dict()
            pairs: tuple[list, list, list, list] = ([], [], [], [])
            for name, value in model.state_dict().items():
                k = 0 if value.dtype.is_floating_point else 2
                pairs[k].append(ema[name])
                pairs[k + 1].append(value.detach())
            self._pairs = pairs
        return self._pairs

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.ramp))
        ema_f, model_f, ema_i, model_i = self._tensors(model)
        torch._foreach_lerp_(ema_f, model_f, 1.0 - d)
        torch._foreach_copy_(ema_i, model_i)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
