"""Dense KD on the YOLO head maps (:class:`fastdiode.losses.DenseKDLoss`): the class logits at the same anchors
and cells, at temperature T."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdiode.distill.terms.base import DistillTerm, TermBatch, TermConfig, TermSources, check_positive
from fastdiode.losses import DenseKDLoss, dense_kd_loss


@dataclass
class KDTermConfig(TermConfig):
    temperature: float = 1.0

    def validate(self, key: str) -> None:
        super().validate(key)
        check_positive(f"{key}.temperature", self.temperature)


class KDTerm(DistillTerm):
    name = "kd"
    Config = KDTermConfig
    reads_teacher = True

    def __init__(self, cfg: KDTermConfig, sources: TermSources):
        super().__init__()
        try:  # the head layouts must match: checked on the probe's maps
            dense_kd_loss(sources.student_preds, sources.teacher_preds, cfg.temperature, backend="reference")
        except ValueError as e:
            raise ValueError(f"loss.kd: the student's and the teacher's head maps do not match: {e}") from None
        self.loss = DenseKDLoss(cfg.temperature, sources.backend)

    def forward(self, batch: TermBatch) -> torch.Tensor:
        return self.loss(batch.student_preds, batch.teacher_preds)
