"""FitNet (:class:`fastdiode.losses.FitNetLoss`): a stride-aware ConvReg per student feature and the MSE to the
teacher's feature at the same point, summed over the points."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fastdiode.distill.terms.base import DistillTerm, TermBatch, TermConfig, TermSources
from fastdiode.losses import FitNetLoss


@dataclass
class FitNetTermConfig(TermConfig):
    RENAMED: ClassVar[dict[str, str]] = {"point": "points"}  # the key before fastdiode 0.2
    points: str | list[str] = "backbone[0]"  # backbone[0]: the stride-8 stage output


class FitNetTerm(DistillTerm):
    name = "fitnet"
    Config = FitNetTermConfig
    reads_teacher = True

    def __init__(self, cfg: FitNetTermConfig, sources: TermSources):
        super().__init__()
        if len(sources.student_features) != len(sources.teacher_features):
            raise ValueError(f"loss.fitnet: {len(sources.student_features)} student points vs "
                             f"{len(sources.teacher_features)} teacher points")
        try:
            self.regressors = nn.ModuleList(FitNetLoss.from_features(s, t) for s, t in
                                            zip(sources.student_features, sources.teacher_features))
        except ValueError as e:
            raise ValueError(f"loss.{e}") from None

    def forward(self, batch: TermBatch) -> torch.Tensor:
        return sum(loss(s, t) for loss, s, t in zip(self.regressors, batch.student_features, batch.teacher_features))
