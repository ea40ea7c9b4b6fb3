"""``fastdiode train-classifier``'s config: a ResNet on a crops folder (``fastdiode data crops``), trained with
cross-entropy, focal loss, or both (DICOD's supplementary Table S1: both together is best)."""
from __future__ import annotations

from dataclasses import dataclass, field

from fastdiode.config import ConfigError, ModelRunConfig
from fastdiode.training.config import LoopConfig, OptimConfig


@dataclass
class ClassifierDataConfig:
    train: str = ""  # a crops folder's split (OUT/train of fastdiode data crops)
    val: str | None = None  # the same for validation (top-1); None: no evaluation
    pad: int = 4  # random translation: pad by this many pixels (edge values) and crop back
    flip_p: float = 0.0  # horizontal flips: off by default (they change digits and text)
    brightness: float = 0.2  # a random gain in [1 - b, 1 + b] per image


@dataclass
class ClassifierModelConfig:
    width: int = 32  # channels of the first stage; each later stage doubles them
    depths: list[int] = field(default_factory=lambda: [2, 2, 2])  # BasicBlocks per stage


@dataclass
class ClassifierLossConfig:
    ce: float = 1.0  # cross-entropy weight
    focal: float = 1.0  # focal loss weight
    gamma: float = 2.0  # the focal loss's focusing parameter


@dataclass
class ClassifierOptimConfig(OptimConfig):
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: float = 0.02


@dataclass
class ClassifierLoopConfig(LoopConfig):
    steps: int = 3000
    batch_size: int = 128
    eval_every: int = 500  # steps; 0: only at the end
    checkpoint_every: int = 500
    out: str = "runs/classifier"


@dataclass
class ClassifierConfig:
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    data: ClassifierDataConfig = field(default_factory=ClassifierDataConfig)
    loss: ClassifierLossConfig = field(default_factory=ClassifierLossConfig)
    optim: ClassifierOptimConfig = field(default_factory=ClassifierOptimConfig)
    train: ClassifierLoopConfig = field(default_factory=ClassifierLoopConfig)
    run: ModelRunConfig = field(default_factory=ModelRunConfig)  # device, precision, compile (no fused ops)

    def validate(self) -> None:
        d, m, lo = self.data, self.model, self.loss
        if not d.train:
            raise ConfigError("data.train: required: a crops split folder (fastdiode data crops --out DIR; DIR/train)")
        if m.width < 1 or not m.depths or min(m.depths) < 1:
            raise ConfigError(f"model: width and depths must be >= 1, got {m.width}, {m.depths}")
        if lo.ce < 0 or lo.focal < 0 or lo.ce + lo.focal == 0:
            raise ConfigError(f"loss: ce and focal must be >= 0 and not both 0, got {lo.ce}, {lo.focal}")
        if d.pad < 0 or not 0 <= d.flip_p <= 1 or not 0 <= d.brightness < 1:
            raise ConfigError(f"data: pad >= 0, flip_p in [0, 1] and brightness in [0, 1) expected, got {d.pad}, "
                              f"{d.flip_p}, {d.brightness}")
        self.optim.validate()
        self.train.validate()
        self.run.validate()
