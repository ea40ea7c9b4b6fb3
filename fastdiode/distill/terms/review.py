"""ReviewKD (:class:`fastdiode.losses.ReviewKDLoss`): the ABF stack over the student's levels, the HCL against the
teacher's (λ 1-2 on detection)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdiode.distill.terms.base import (
    DistillTerm,
    TermBatch,
    TermConfig,
    TermSources,
    check_positive,
    check_same_sizes,
)
from fastdiode.losses import ReviewKDLoss


@dataclass
class ReviewTermConfig(TermConfig):
    points: str | list[str] = "neck"
    mid_channels: int | None = None  # the ABF width; None: the teacher's smallest channel count

    def validate(self, key: str) -> None:
        super().validate(key)
        check_positive(f"{key}.mid_channels", self.mid_channels, "a positive channel count")


class ReviewTerm(DistillTerm):
    name = "review"
    Config = ReviewTermConfig
    reads_teacher = True

    def __init__(self, cfg: ReviewTermConfig, sources: TermSources):
        super().__init__()
        check_same_sizes("review", sources.student_features, sources.teacher_features)
        self.loss = ReviewKDLoss.from_features(sources.student_features, sources.teacher_features,
                                               mid_channels=cfg.mid_channels, backend=sources.backend)

    def forward(self, batch: TermBatch) -> torch.Tensor:
        return self.loss(batch.student_features, batch.teacher_features)
