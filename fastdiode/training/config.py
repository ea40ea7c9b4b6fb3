"""The config sections every trainer shares: ``optim`` (the optimiser and its learning-rate schedule) and the loop
part of ``train`` (steps, batch, cadence, seed, run folder). A trainer subclasses them to add its own keys or to
change a default; the shared loop (:mod:`fastdiode.training.loop`) reads only these fields."""
from __future__ import annotations

from dataclasses import dataclass, field

from fastdiode.config import ConfigError

OPTIMIZERS = ("adam", "sgd")


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | sgd
    lr: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam
    momentum: float = 0.937  # sgd (Nesterov when > 0)
    weight_decay: float = 0.0  # on weights only, never on BN parameters and biases
    warmup: float = 0.01  # linear warmup, as a fraction of the steps
    lr_min: float = 0.0  # the cosine's floor
    grad_clip: float = 0.0  # max gradient norm; 0: off

    def validate(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name: {self.name!r} is not one of {', '.join(OPTIMIZERS)}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas: expected two values in [0, 1), got {self.betas}")
        checks = (("optim.lr", self.lr, self.lr > 0, "> 0"),
                  ("optim.lr_min", self.lr_min, 0 <= self.lr_min <= self.lr, "in [0, optim.lr]"),
                  ("optim.momentum", self.momentum, 0 <= self.momentum < 1, "in [0, 1)"),
                  ("optim.weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
                  ("optim.warmup", self.warmup, 0 <= self.warmup <= 1, "a fraction of the steps in [0, 1]"),
                  ("optim.grad_clip", self.grad_clip, self.grad_clip >= 0, ">= 0 (0: off)"))
        for key, value, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{key}: expected {expected}, got {value}")


@dataclass
class LoopConfig:
    steps: int = 1000
    batch_size: int = 64  # global, across ranks
    eval_every: int = 1000  # steps; 0: only at the end
    log_every: int = 50
    checkpoint_every: int = 1000
    seed: int = 0
    out: str = "runs/train"

    def validate(self) -> None:
        for key, value in (("train.steps", self.steps), ("train.batch_size", self.batch_size),
                           ("train.log_every", self.log_every), ("train.checkpoint_every", self.checkpoint_every)):
            if value < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {value}")
        if self.eval_every < 0:
            raise ConfigError(f"train.eval_every: expected a number of steps >= 0 (0: only at the end), got "
                              f"{self.eval_every}")
