"""FGFI (:class:`fastdiode.losses.FGFILoss`): masked imitation of the features that feed the detection heads. The
masks come from the teacher's anchors and the targets (YOLOv3 family); an anchor-free YOLOv8/11 teacher has no
anchors, so there they are the cells its task-aligned assigner makes positive for the targets (the anchors FGFI
means, the ones that would detect the objects)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdiode.config import ConfigError
from fastdiode.distill.terms.base import DistillTerm, TermBatch, TermConfig, TermSources, check_same_sizes
from fastdiode.losses import FGFILoss
from fastdiode.models.ultra_loss import positive_cells


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
        student, teacher, model = sources.student_features, sources.teacher_features, sources.teacher
        self.reg_max = getattr(model, "reg_max", None)  # an anchor-free (YOLOv8/11) teacher
        heads = getattr(model, "heads", None)
        strides = model.strides if self.reg_max is not None else [float(h.stride) for h in heads or []]
        if len(strides) != len(teacher):
            raise ValueError(f"loss.fgfi: needs one feature point per detection level of the teacher "
                             f"({len(strides)} levels, {len(teacher)} points)")
        check_same_sizes("fgfi", student, teacher)
        for i, (t, stride) in enumerate(zip(teacher, strides)):
            grid = (sources.size // int(stride),) * 2
            if tuple(t.shape[-2:]) != grid:
                raise ValueError(f"loss.fgfi: point {i} ({sources.teacher_points[i]}) is {tuple(t.shape[-2:])}, but "
                                 f"level {i} predicts on {grid} (stride {stride}): the points must feed the heads, "
                                 "in head order (the default, neck, does)")
        self.loss = FGFILoss.from_features(student, teacher, psi=cfg.psi)
        self.anchors = tuple(h.anchors.to(sources.device) for h in heads) if self.reg_max is None else None
        self.strides = tuple(float(s) for s in strides)

    def forward(self, batch: TermBatch) -> torch.Tensor:
        masks = None if self.reg_max is None else \
            positive_cells(batch.teacher_preds, batch.targets, list(self.strides), self.reg_max)
        return self.loss(batch.student_features, batch.teacher_features, batch.targets,
                         list(self.anchors) if self.anchors is not None else None, list(self.strides), masks)
