"""FGFI (:class:`fastdiode.losses.FGFILoss`): masked imitation of the features that feed the detection heads, the
masks from the teacher's anchors and the targets."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdiode.config import ConfigError
from fastdiode.distill.terms.base import DistillTerm, TermBatch, TermConfig, TermSources, check_same_sizes
from fastdiode.losses import FGFILoss


@dataclass
class FGFITermConfig(TermConfig):
    points: str | list[str] = "neck"  # one feature per head, in head order
    psi: float = 0.5  # the mask's IoU factor

    def validate(self, key: str) -> None:
        super().validate(key)
        if not 0 < self.psi <= 1:
            raise ConfigError(f"{key}.psi: expected a factor in (0, 1], got {self.psi}")


class FGFITerm(DistillTerm):
    name = "fgfi"
    Config = FGFITermConfig
    reads_teacher = True

    def __init__(self, cfg: FGFITermConfig, sources: TermSources):
        super().__init__()
        student, teacher = sources.student_features, sources.teacher_features
        heads = getattr(sources.teacher, "heads", None)
        if not heads or len(heads) != len(teacher):
            raise ValueError(f"loss.fgfi: needs one feature point per anchor-based detection head of the teacher "
                             f"({len(heads or [])} heads, {len(teacher)} points)")
        check_same_sizes("fgfi", student, teacher)
        for i, (t, head) in enumerate(zip(teacher, heads)):
            grid = (sources.size // int(head.stride),) * 2
            if tuple(t.shape[-2:]) != grid:
                raise ValueError(f"loss.fgfi: point {i} ({sources.teacher_points[i]}) is {tuple(t.shape[-2:])}, but "
                                 f"head {i} predicts on {grid} (stride {head.stride}): the points must feed the heads, "
                                 "in head order (the default, neck, does)")
        self.loss = FGFILoss.from_features(student, teacher, psi=cfg.psi)
        self.anchors = tuple(h.anchors.to(sources.device) for h in heads)
        self.strides = tuple(float(h.stride) for h in heads)

    def forward(self, batch: TermBatch) -> torch.Tensor:
        return self.loss(batch.student_features, batch.teacher_features, batch.targets, list(self.anchors),
                         list(self.strides))
