"""The trainer's config (method.md §7). Defaults are the paper's Table 3 (batch 64, train 416 / eval 640,
Adam(0.001, 0.9, 0.999), cosine decay with warmup, 500k iterations, mimic loss only); the same schema drives
``fastdiode distill`` (a teacher, loss.distill > 0) and ``fastdiode train`` (no teacher, label loss only)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from fastdiode.config import ConfigError, RunConfig, TeacherConfig
from fastdiode.data.batch_plan import BatchPlan
from fastdiode.data.loader import LOADERS, batches
from fastdiode.data.scan import ScannedDataset
from fastdiode.data.train_augment import LoaderAugment

OPTIMIZERS = ("adam", "sgd")


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

    def augment(self) -> LoaderAugment:
        return LoaderAugment(self.flip_p, self.hue, self.saturation, self.value)

    def batches(self, data: ScannedDataset, plan: BatchPlan, start: int, stop: int,
                device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The augmented batches of steps start..stop-1 from this section's loader."""
        return batches(self.loader, data, plan, self.augment(), self.capacity, start, stop, self.workers, device)


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | sgd
    lr: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.937  # sgd
    weight_decay: float = 0.0
    warmup: float = 0.01  # fraction of the steps
    lr_min: float = 0.0  # the cosine's floor
    ema: bool = False  # an exponential moving average of the student (the authors' code)
    ema_decay: float = 0.9999
    grad_clip: float = 0.0  # max gradient norm; 0: off


@dataclass
class KDTermConfig:
    """Dense KD on the class logits at the same anchors and cells (fastdiode.ops.dense_kd_loss)."""

    weight: float = 0.0
    temperature: float = 1.0
    warmup: int = 0  # steps over which the weight ramps up linearly from 0


@dataclass
class FitNetTermConfig:
    """FitNet: a ConvReg adapter on one student feature, MSE to the teacher's feature at the same point."""

    weight: float = 0.0
    point: str = "backbone[0]"  # a feature point: backbone[0] is the stride-8 stage output
    warmup: int = 0


@dataclass
class FGFITermConfig:
    """FGFI: masked imitation of the features that feed each detection head (weight 0.01 in the paper)."""

    weight: float = 0.0
    points: str | list[str] = "neck"  # one feature per head, in head order
    psi: float = 0.5
    warmup: int = 0


@dataclass
class ReviewTermConfig:
    """ReviewKD: the ABF stack on the student's levels and the HCL against the teacher's (λ 1-2 on detection)."""

    weight: float = 0.0
    points: str | list[str] = "neck"
    mid_channels: int | None = None  # ABF width; None: the teacher's smallest channel count
    warmup: int = 0


@dataclass
class DICODClsTermConfig:
    """DICOD's classification distillation: the crop classifier's logits at each positive anchor (weight 0.4)."""

    weight: float = 0.0
    temperature: float = 2.0
    warmup: int = 0


@dataclass
class DICODLocTermConfig:
    """DICOD's localization distillation: L1 of pooled pixels and classifier-stem features between the crops at the
    predicted and the ground-truth box (weight 0.15)."""

    weight: float = 0.0
    size: int | None = None  # crop size in pixels; None: the classifier's input size
    warmup: int = 0


@dataclass
class ClassifierRefConfig:
    """DICOD's crop classifier (``fastdiode train-classifier``). ``classifier=PATH`` is short for
    ``classifier.weights=PATH``."""

    SHORTHAND: ClassVar[str] = "weights"
    weights: str = ""  # a fastdiode classifier checkpoint


@dataclass
class DistillLossConfig:
    """The trainer's loss weights (the inversion's are :class:`fastdiode.inversion.config.InversionLossConfig`):
    distill·L_mimic + label·L_task + the distillation terms below, each with its weight and options."""

    distill: float | None = None  # alpha_distill x L_mimic; None: 1 with a teacher, else 0
    label: float | None = None  # alpha_label x the student's task loss; None: 0 with a teacher (DIODE), else 1
    kd: KDTermConfig = field(default_factory=KDTermConfig)
    fitnet: FitNetTermConfig = field(default_factory=FitNetTermConfig)
    fgfi: FGFITermConfig = field(default_factory=FGFITermConfig)
    review: ReviewTermConfig = field(default_factory=ReviewTermConfig)
    dicod_cls: DICODClsTermConfig = field(default_factory=DICODClsTermConfig)
    dicod_loc: DICODLocTermConfig = field(default_factory=DICODLocTermConfig)

    def terms(self) -> dict[str, object]:
        """The distillation terms that are on (weight > 0), by name."""
        return {name: term for name in TERMS if (term := getattr(self, name)).weight > 0}


TERMS = ("kd", "fitnet", "fgfi", "review", "dicod_cls", "dicod_loc")
TEACHER_TERMS = ("kd", "fitnet", "fgfi", "review")  # the terms that read the detector teacher
CLASSIFIER_TERMS = ("dicod_cls", "dicod_loc")  # the terms that read the crop classifier


@dataclass
class TrainLoopConfig:
    steps: int = 500_000
    batch_size: int = 64  # global, across ranks
    img_size: int = 416
    multiscale: list[int] | None = None  # e.g. [320, 352, ..., 640]: a size per scale_every steps
    scale_every: int = 10
    eval_size: int = 640
    eval_every: int = 5000  # steps; 0: only at the end
    best_metric: str = "mAP@.5"
    log_every: int = 50
    checkpoint_every: int = 1000
    seed: int = 0
    channels_last: bool = True
    out: str = "runs/distill"


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

    def batch_plan(self, num_items: int, rank: int = 0, world: int = 1) -> BatchPlan:
        t = self.train
        return BatchPlan(num_items, t.batch_size, t.seed, rank, world, t.multiscale or [t.img_size], t.scale_every)

    def loss_weights(self) -> tuple[float, float]:
        """(alpha_distill, alpha_label), the defaults resolved: with a teacher (1, 0), as DIODE; without (0, 1)."""
        distill = self.loss.distill if self.loss.distill is not None else float(self.has_teacher)
        label = self.loss.label if self.loss.label is not None else float(not self.has_teacher)
        return distill, label

    def validate(self) -> None:
        t, o, d = self.train, self.optim, self.data
        if not d.train:
            raise ConfigError("data.train: required: a dataset folder (images/ + labels/ or annotations.json)")
        if d.loader not in LOADERS:
            raise ConfigError(f"data.loader: {d.loader!r} is not one of {', '.join(LOADERS)}")
        if o.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name: {o.name!r} is not one of {', '.join(OPTIMIZERS)}")
        if len(o.betas) != 2:
            raise ConfigError(f"optim.betas: expected two values, got {o.betas}")
        if d.limit < 0:
            raise ConfigError(f"data.limit: expected a number of images >= 0 (0: all), got {d.limit}")
        for key, value in (("train.steps", t.steps), ("train.batch_size", t.batch_size), ("data.capacity", d.capacity),
                           ("train.log_every", t.log_every), ("train.checkpoint_every", t.checkpoint_every)):
            if value < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {value}")
        for key, size in [("train.img_size", t.img_size), ("train.eval_size", t.eval_size)] + \
                [(f"train.multiscale[{i}]", s) for i, s in enumerate(t.multiscale or [])]:
            if size < 32 or size % 32:
                raise ConfigError(f"{key}: {size} is not a positive multiple of 32")
        self.run.validate()
        distill, label = self.loss_weights()
        if distill < 0 or label < 0 or (distill + label == 0 and not self.loss.terms()):
            raise ConfigError("loss: distill and label must be >= 0 and not all the loss weights 0")
        if distill > 0 and not self.has_teacher:
            raise ConfigError("teacher: loss.distill > 0 needs a teacher (teacher=PATH; or use fastdiode train)")
        for name in TERMS:
            term = getattr(self.loss, name)
            if term.weight < 0 or term.warmup < 0:
                raise ConfigError(f"loss.{name}: weight and warmup must be >= 0, got {term.weight}, {term.warmup}")
            if term.weight > 0 and name in TEACHER_TERMS and not self.has_teacher:
                raise ConfigError(f"loss.{name}.weight: {term.weight} > 0 needs a teacher (teacher=PATH, with "
                                  "fastdiode distill)")
            if term.weight > 0 and name in CLASSIFIER_TERMS and not self.classifier.weights:
                raise ConfigError(f"loss.{name}.weight: {term.weight} > 0 needs a crop classifier (classifier=PATH, "
                                  "from fastdiode train-classifier)")
        for key, value in (("loss.kd.temperature", self.loss.kd.temperature),
                           ("loss.dicod_cls.temperature", self.loss.dicod_cls.temperature)):
            if value <= 0:
                raise ConfigError(f"{key}: expected > 0, got {value}")
        if self.loss.dicod_loc.size is not None and self.loss.dicod_loc.size < 1:
            raise ConfigError(f"loss.dicod_loc.size: expected a positive crop size in pixels, got "
                              f"{self.loss.dicod_loc.size}")
