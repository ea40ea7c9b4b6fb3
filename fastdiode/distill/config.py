"""The trainer's config (method.md §7). Defaults are the paper's Table 3 (batch 64, train 416 / eval 640,
Adam(0.001, 0.9, 0.999), cosine decay with warmup, 500k iterations, mimic loss only); the same schema drives
``fastdiode distill`` (a teacher, loss.distill > 0) and ``fastdiode train`` (no teacher, label loss only)."""
from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import ClassVar

from fastdiode.config import ConfigError, RunConfig, TeacherConfig
from fastdiode.distill.terms import TERMS, TermConfig
from fastdiode.training.config import LoopConfig
from fastdiode.training.config import OptimConfig as BaseOptimConfig

LOADERS = ("auto", "torch", "dali")  # data.loader: auto is DALI when installed (fastdiode.data.loader)


@dataclass
class StudentConfig:
    model: str = "yolov3"  # a built-in name (ignored when cfg is set)
    cfg: str | None = None  # a darknet .cfg instead
    num_classes: int = 80
    width: float | None = None  # yolo-micro only
    depth: int | None = None  # yolo-micro only
    anchors: list[int] | None = None  # flat pixel list; default: the model's, or the teacher's for distill
    init: str | None = None  # optional starting weights (fastdiode checkpoint)


@dataclass
class DataConfig:
    train: str = ""  # a dataset folder: images/ + labels/ (YOLO) or annotations.json (COCO)
    val: str | None = None  # the same for validation (COCO mAP); None: no evaluation
    limit: int = 0  # train on the first this many images (in file-name order); 0: all
    loader: str = "auto"  # auto (DALI when installed) | torch | dali
    workers: int = 2
    capacity: int = 32  # boxes per image in a batch
    strict: bool = False  # corrupt images / malformed labels: skip and report (False) or fail (True)
    flip_p: float = 0.5
    hue: float = 5.0  # degrees
    saturation: float = 0.5
    value: float = 0.3


@dataclass
class OptimConfig(BaseOptimConfig):
    ema: bool = False  # an exponential moving average of the student (the authors' code)
    ema_decay: float = 0.9999

    def validate(self) -> None:
        super().validate()
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"optim.ema_decay: expected a decay in (0, 1), got {self.ema_decay}")


@dataclass
class ClassifierRefConfig:
    """DICOD's crop classifier (``fastdiode train-classifier``). ``classifier=PATH`` is short for
    ``classifier.weights=PATH``."""

    SHORTHAND: ClassVar[str] = "weights"
    weights: str = ""  # a fastdiode classifier checkpoint


def _terms_on(self) -> dict[str, TermConfig]:
    """The distillation terms that are on (weight > 0), by name, in the table's order."""
    return {name: term for name in TERMS if (term := getattr(self, name)).weight > 0}


DistillLossConfig = make_dataclass("DistillLossConfig", [
    ("distill", float | None, field(default=None)),  # alpha_distill x L_mimic; None: 1 with a teacher, else 0
    ("label", float | None, field(default=None)),  # alpha_label x the task loss; None: 0 with a teacher, else 1
    *((name, term.Config, field(default_factory=term.Config)) for name, term in TERMS.items())],
    namespace={"terms": _terms_on, "__doc__": """The trainer's loss weights (the inversion's are
    :class:`fastdiode.inversion.config.InversionLossConfig`): distill·L_mimic + label·L_task + the distillation
    terms that are on, one section per entry of :data:`fastdiode.distill.terms.TERMS` (``loss.kd``,
    ``loss.review``, ...), each with its weight, warmup and options."""})
DistillLossConfig.__module__ = __name__


@dataclass
class TrainLoopConfig(LoopConfig):
    steps: int = 500_000
    eval_every: int = 5000  # steps; 0: only at the end
    out: str = "runs/distill"
    img_size: int = 416
    multiscale: list[int] | None = None  # e.g. [320, 352, ..., 640]: a size per scale_every steps
    scale_every: int = 10
    eval_size: int = 640
    best_metric: str = "mAP@.5"
    channels_last: bool = True


@dataclass
class TrainConfig:
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)  # distill; no weights for train
    classifier: ClassifierRefConfig = field(default_factory=ClassifierRefConfig)  # DICOD's terms only
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: DistillLossConfig = field(default_factory=DistillLossConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    run: RunConfig = field(default_factory=RunConfig)  # device, precision, compilation of the step

    @property
    def has_teacher(self) -> bool:
        return bool(self.teacher.weights)

    def loss_weights(self) -> tuple[float, float]:
        """(alpha_distill, alpha_label), the defaults resolved: with a teacher (1, 0), as DIODE; without (0, 1)."""
        distill = self.loss.distill if self.loss.distill is not None else float(self.has_teacher)
        label = self.loss.label if self.loss.label is not None else float(not self.has_teacher)
        return distill, label

    def validate(self) -> None:
        t, d = self.train, self.data
        if not d.train:
            raise ConfigError("data.train: required: a dataset folder (images/ + labels/ or annotations.json)")
        if d.loader not in LOADERS:
            raise ConfigError(f"data.loader: {d.loader!r} is not one of {', '.join(LOADERS)}")
        if d.limit < 0:
            raise ConfigError(f"data.limit: expected a number of images >= 0 (0: all), got {d.limit}")
        if d.capacity < 1 or d.workers < 0:
            raise ConfigError(f"data.capacity, data.workers: expected >= 1 and >= 0, got {d.capacity}, {d.workers}")
        t.validate()
        self.optim.validate()
        self.run.validate()
        for key, size in [("train.img_size", t.img_size), ("train.eval_size", t.eval_size)] + \
                [(f"train.multiscale[{i}]", s) for i, s in enumerate(t.multiscale or [])]:
            if size < 32 or size % 32:
                raise ConfigError(f"{key}: {size} is not a positive multiple of 32")
        distill, label = self.loss_weights()
        if distill < 0 or label < 0 or (distill + label == 0 and not self.loss.terms()):
            raise ConfigError("loss: distill and label must be >= 0 and not all the loss weights 0")
        if distill > 0 and not self.has_teacher:
            raise ConfigError("teacher: loss.distill > 0 needs a teacher (teacher=PATH; or use fastdiode train)")
        for name, term in TERMS.items():
            section = getattr(self.loss, name)
            section.validate(f"loss.{name}")
            if section.weight > 0 and term.reads_teacher and not self.has_teacher:
                raise ConfigError(f"loss.{name}.weight: {section.weight} > 0 needs a teacher (teacher=PATH, with "
                                  "fastdiode distill)")
            if section.weight > 0 and term.reads_classifier and not self.classifier.weights:
                raise ConfigError(f"loss.{name}.weight: {section.weight} > 0 needs a crop classifier "
                                  "(classifier=PATH, from fastdiode train-classifier)")
