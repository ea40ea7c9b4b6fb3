"""DICOD's terms (:class:`fastdiode.losses.DICODClsLoss`, :class:`fastdiode.losses.DICODLocLoss`): the crop
classifier teaches the detector's positive anchors their classes and their boxes. Both need the student's
anchor-based YOLO heads and a classifier of the detector's classes, checked here, once, for both terms."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fastdiode.config import ConfigError
from fastdiode.distill.terms.base import DistillTerm, TermBatch, TermConfig, TermSources, check_positive
from fastdiode.losses import DICODClsLoss, DICODLocLoss
from fastdiode.losses.dicod import TEACHER_TARGETS


@dataclass
class DICODClsTermConfig(TermConfig):
    """Weight 0.4 in the paper."""

    temperature: float = 2.0
    # the teacher's distribution: softmax(t/T) (fastdiode), or the normalised sigmoid (the authors' code)
    teacher: str = "softmax"

    def validate(self, key: str) -> None:
        super().validate(key)
        check_positive(f"{key}.temperature", self.temperature)
        if self.teacher not in TEACHER_TARGETS:
            raise ConfigError(f"{key}.teacher: {self.teacher!r} is not one of {', '.join(TEACHER_TARGETS)}")


@dataclass
class DICODLocTermConfig(TermConfig):
    """Weight 0.15 in the paper."""

    size: int | None = None  # crop size in pixels; None: the classifier's input size
    clamp: bool = False  # clamp boxes to the image before cropping (the authors' code); false: zeros outside

    def validate(self, key: str) -> None:
        super().validate(key)
        check_positive(f"{key}.size", self.size, "a positive crop size in pixels")


class ClassifierTerm(DistillTerm):
    """A term that reads the frozen crop classifier. The loss module that holds it is kept out of the module
    tree (a tuple), so the classifier is neither trained, switched to train mode, nor saved with the adapters.
    The student's positives come from its own loss's assignment: its YOLO heads (YOLOv3 family), or the
    task-aligned assigner of an anchor-free YOLOv8/11 student."""

    reads_classifier = True

    def __init__(self, sources: TermSources, loss: nn.Module):
        super().__init__()
        classifier, student = sources.classifier, sources.student
        heads = student if hasattr(student, "reg_max") else getattr(student, "heads", None)
        if not heads:
            raise ValueError(f"loss.{self.name}: DICOD's terms need YOLO detection heads (anchor-based YOLO layers, "
                             "or a YOLOv8/11 head)")
        classes = getattr(classifier, "num_classes", None)
        if classes != student.num_classes:
            raise ValueError(f"classifier: {classes} classes, but the detector has {student.num_classes}; train "
                             "the classifier on crops of the detector's dataset")
        names = getattr(classifier, "class_names", None)
        if names is not None and sources.class_names is not None and list(names) != list(sources.class_names):
            raise ValueError(f"classifier: its classes are {list(names)}, but the detector's are "
                             f"{list(sources.class_names)}")
        self._loss, self._heads = (loss,), (heads,)  # tuples: neither is a submodule of the term

    def forward(self, batch: TermBatch) -> torch.Tensor:
        return self._loss[0](batch.student_preds, batch.targets, batch.images, self._heads[0])


class DICODClsTerm(ClassifierTerm):
    name = "dicod_cls"
    Config = DICODClsTermConfig

    def __init__(self, cfg: DICODClsTermConfig, sources: TermSources):
        super().__init__(sources, DICODClsLoss(sources.classifier, cfg.temperature, backend=sources.backend,
                                               teacher_target=cfg.teacher))


class DICODLocTerm(ClassifierTerm):
    name = "dicod_loc"
    Config = DICODLocTermConfig

    def __init__(self, cfg: DICODLocTermConfig, sources: TermSources):
        super().__init__(sources, DICODLocLoss(sources.classifier, cfg.size, backend=sources.backend, clamp=cfg.clamp))
