"""What a distillation term is: a config (a :class:`TermConfig` with the term's options), a :class:`DistillTerm`
built once from a probe forward pass (:class:`TermSources`) and called every step on a :class:`TermBatch`, and an
entry in :data:`fastdiode.distill.terms.TERMS`. The trainer loops over the table; nothing else names a term."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fastdiode.config import ConfigError


@dataclass
class TermConfig:
    """The keys every term has: ``weight`` (0: off) and ``warmup``, the steps over which the weight ramps up
    linearly from 0."""

    weight: float = 0.0
    warmup: int = 0

    def validate(self, key: str) -> None:
        """Check the values; ``key`` is the section's dotted name (``loss.kd``) for the message."""
        if self.weight < 0 or self.warmup < 0:
            raise ConfigError(f"{key}: weight and warmup must be >= 0, got {self.weight}, {self.warmup}")

    def weight_at(self, step: int) -> float:
        return self.weight * (min(1.0, step / self.warmup) if self.warmup else 1.0)


def check_positive(key: str, value: float | None, what: str = "> 0") -> None:
    """A term option that must be positive (None passes: the option's default applies)."""
    if value is not None and value <= 0:
        raise ConfigError(f"{key}: expected {what}, got {value}")


def check_same_sizes(term: str, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> None:
    """Feature terms pair the student's points with the teacher's: as many, at the same map sizes."""
    if len(student) != len(teacher):
        raise ValueError(f"loss.{term}: {len(student)} student points vs {len(teacher)} teacher points")
    for i, (s, t) in enumerate(zip(student, teacher)):
        if s.shape[-2:] != t.shape[-2:]:
            raise ValueError(f"loss.{term}: point {i}: the student's map {tuple(s.shape[-2:])} vs the teacher's "
                             f"{tuple(t.shape[-2:])}; choose points at the same strides")


@dataclass
class TermSources:
    """What a term is built from: the models, and for terms that tap features, both models' features at the
    term's points on a probe batch of ``size`` px (with the point names, for messages)."""

    student: nn.Module
    teacher: nn.Module | None
    classifier: nn.Module | None
    class_names: list[str] | None  # the detector's
    size: int
    device: torch.device
    backend: str | None
    student_preds: list[torch.Tensor] | None = None
    teacher_preds: list[torch.Tensor] | None = None
    student_features: list[torch.Tensor] | None = None
    teacher_features: list[torch.Tensor] | None = None
    teacher_points: list[str] | None = None


@dataclass
class TermBatch:
    """What a term reads at a step: the student's input images and padded targets (B, K, 5), both models' raw
    head maps (the teacher's None when no term reads it), and both models' features at this term's points."""

    images: torch.Tensor
    targets: torch.Tensor
    student_preds: list[torch.Tensor]
    teacher_preds: list[torch.Tensor] | None
    student_features: list[torch.Tensor]
    teacher_features: list[torch.Tensor]


class DistillTerm(nn.Module):
    """One distillation term. A subclass names itself and its config, says what it reads, builds its adapters
    (trained with the student, saved in ``state.pt`` only) from :class:`TermSources`, and returns its unweighted
    loss from a :class:`TermBatch`. Everything about it that can be wrong is checked in ``__init__``, before any
    step; errors name the config key ``loss.<name>``."""

    name: ClassVar[str]
    Config: ClassVar[type[TermConfig]]
    reads_teacher: ClassVar[bool] = False  # the detector teacher's head maps or features
    reads_classifier: ClassVar[bool] = False  # DICOD's crop classifier

    @classmethod
    def points(cls, cfg: TermConfig) -> str | list[str] | None:
        """The feature points the term taps on both models (None: it taps none)."""
        return getattr(cfg, "points", None)

    def forward(self, batch: TermBatch) -> torch.Tensor:
        raise NotImplementedError
