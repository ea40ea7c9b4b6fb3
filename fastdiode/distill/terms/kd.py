"""Dense KD on the head maps (:class:`fastdiode.losses.DenseKDLoss`): the class logits at the same anchors and
cells, at temperature T, weighted by the teacher's objectness (YOLOv3 family) or, on anchor-free YOLOv8/11 heads,
by its largest class probability."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdiode.distill.terms.base import DistillTerm, TermBatch, TermConfig, TermSources, check_positive
from fastdiode.losses import DenseKDLoss


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
        reg_max = getattr(sources.student, "reg_max", None)  # set on anchor-free (YOLOv8/11) detectors
        if reg_max != getattr(sources.teacher, "reg_max", None):
            raise ValueError("loss.kd: the student's and the teacher's head maps do not match: one is anchor-free "
                             "(YOLOv8/11) and the other anchor-based; dense KD needs one head layout")
        try:  # the head layouts must match: checked on the probe's maps
            DenseKDLoss(cfg.temperature, "reference", reg_max)(sources.student_preds, sources.teacher_preds)
        except ValueError as e:
            raise ValueError(f"loss.kd: the student's and the teacher's head maps do not match: {e}") from None
        self.loss = DenseKDLoss(cfg.temperature, sources.backend, reg_max)

    def forward(self, batch: TermBatch) -> torch.Tensor:
        return self.loss(batch.student_preds, batch.teacher_preds)
