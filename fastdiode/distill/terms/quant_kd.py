"""The terms of quantization-aware distillation (DFQ-Dojo's zero-shot QAT; ``fastdiode quantize mode=qat``), usable
in any distillation between a model and a copy of the same architecture:

* ``head_kl``: KL at temperature τ on the head maps (:func:`fastdiode.losses.head_kl_loss`);
* ``layer_mse``: MSE on every conv output (:func:`fastdiode.losses.layer_mse_loss`; points ``convs``);
* ``pseudo_label``: the student's task loss against the teacher's detections on the same batch (NMS at ``conf`` /
  ``iou``, as ultralytics' predictor defaults), for images without labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdiode.config import ConfigError
from fastdiode.distill.terms.base import DistillTerm, TermBatch, TermConfig, TermSources, check_positive
from fastdiode.losses import head_kl_loss, layer_mse_loss
from fastdiode.models.boxes import detections_to_targets


@dataclass
class HeadKLTermConfig(TermConfig):
    temperature: float = 4.0

    def validate(self, key: str) -> None:
        super().validate(key)
        check_positive(f"{key}.temperature", self.temperature)


class HeadKLTerm(DistillTerm):
    name = "head_kl"
    Config = HeadKLTermConfig
    reads_teacher = True

    def __init__(self, cfg: HeadKLTermConfig, sources: TermSources):
        super().__init__()
        try:
            head_kl_loss(sources.student_preds, sources.teacher_preds, cfg.temperature)
        except ValueError as e:
            raise ValueError(f"loss.{e}") from None
        self.temperature = cfg.temperature

    def forward(self, batch: TermBatch) -> torch.Tensor:
        return head_kl_loss(batch.student_preds, batch.teacher_preds, self.temperature)


@dataclass
class LayerMSETermConfig(TermConfig):
    points: str | list[str] = "convs"


class LayerMSETerm(DistillTerm):
    name = "layer_mse"
    Config = LayerMSETermConfig
    reads_teacher = True

    def __init__(self, cfg: LayerMSETermConfig, sources: TermSources):
        super().__init__()
        try:
            layer_mse_loss(sources.student_features, sources.teacher_features)
        except ValueError as e:
            raise ValueError(f"loss.{e}") from None

    def forward(self, batch: TermBatch) -> torch.Tensor:
        return layer_mse_loss(batch.student_features, batch.teacher_features)


@dataclass
class PseudoLabelTermConfig(TermConfig):
    conf: float = 0.25
    iou: float = 0.7
    capacity: int = 32  # detections kept per image, best first

    def validate(self, key: str) -> None:
        super().validate(key)
        for sub, value in (("conf", self.conf), ("iou", self.iou)):
            if not 0 < value < 1:
                raise ConfigError(f"{key}.{sub}: expected a value in (0, 1), got {value}")
        check_positive(f"{key}.capacity", self.capacity, ">= 1")


class PseudoLabelTerm(DistillTerm):
    name = "pseudo_label"
    Config = PseudoLabelTermConfig
    reads_teacher = True

    def __init__(self, cfg: PseudoLabelTermConfig, sources: TermSources):
        super().__init__()
        self.cfg = cfg
        self._models = (sources.student, sources.teacher)  # a tuple: not submodules, not trained or saved here

    def forward(self, batch: TermBatch) -> torch.Tensor:
        student, teacher = self._models
        with torch.no_grad():
            preds = [p.detach().float() for p in batch.teacher_preds]
            dets = teacher.detect(preds, self.cfg.conf, self.cfg.iou, self.cfg.capacity)
            h, w = batch.images.shape[-2:]
            targets = detections_to_targets(dets, w, h, self.cfg.capacity)
        loss, _ = student.task_loss(batch.student_preds, targets.to(batch.images.device))
        return loss
