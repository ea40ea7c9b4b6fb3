"""The inversion config (method.md §2–6). Defaults are the paper's values (Tables 1 and 2); the authors'
code settings live in configs/diode_reference_code.yaml. Per-stage values are lists, one entry per stage."""
from __future__ import annotations

from dataclasses import dataclass, field

from fastdiode.config import ConfigError


@dataclass
class TeacherConfig:
    model: str = "yolov3-spp"  # a built-in name (ignored when cfg is set)
    cfg: str | None = None  # a darknet .cfg instead of a built-in model
    weights: str = ""  # fastdiode checkpoint, darknet .weights, or "random" (benchmarking only)
    num_classes: int = 80


@dataclass
class StagesConfig:
    resolution: list[int] = field(default_factory=lambda: [160, 320, 416])
    batch_size: list[int] = field(default_factory=lambda: [256, 96, 48])
    lr: list[float] = field(default_factory=lambda: [0.2, 0.002, 0.0002])
    lr_min: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # the cosine's floor
    iterations: list[int] = field(default_factory=lambda: [2500, 1500, 1000])
    # Linear warmup as a fraction of each stage; the paper says "cosine decay with warmup" without a length.
    warmup: list[float] = field(default_factory=lambda: [0.05, 0.05, 0.05])
    betas: list[list[float]] = field(default_factory=lambda: [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # sign-SGD


@dataclass
class LossConfig:
    det: float = 1.0  # the multiplier m of the detection loss (DIODE: 0.5-1.0)
    bn: float = 0.1
    tv_l1: float = 75.0
    tv_l2: float = 0.0
    l2: float = 1e-7
    bn_p: float = 2.0
    bn_layers: str = "all"  # "all" or "backbone" (DIODE hooks the Darknet-53 backbone only)
    first_bn_coef: list[float] = field(default_factory=lambda: [2.0, 0.0, 0.0])
    cosine_layer_decay: bool = False


@dataclass
class AugmentConfig:
    jitter: list[int] = field(default_factory=lambda: [20, 40, 52])  # J = H / 8 per stage
    flip_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.1
    erase_p: float = 0.5
    same_on_batch: bool = True


@dataclass
class TargetsConfig:
    sampler: str = "onebox"  # "onebox" or "labels"
    labels: str | None = None  # with "labels": a COCO json or a YOLO labels folder
    images: str | None = None  # with "labels": their image folder (the label order and image sizes)
    capacity: int = 16  # boxes per image, Y_fp additions included
    min_size: float = 0.2
    max_size: float = 0.8


@dataclass
class FalsePositiveConfig:
    """Y_fp sampling (paper Table 2): from ``warmup`` to ``stop`` (global iterations), every ``every`` steps."""

    enabled: bool = True
    warmup: int = 800
    every: int = 100
    stop: int = 2800
    conf: float = 0.2
    iou: float = 0.35
    min_area: float = 0.01
    max_area: float = 0.85
    nms_iou: float = 0.45


@dataclass
class JobConfig:
    out: str = "runs/invert"
    num_batches: int = 1  # job batches of stages.batch_size[0] images each
    seed: int = 0
    log_every: int = 50  # losses are read (and checked for NaN/Inf) every this many steps
    device: str = "auto"
    backend: str = "auto"  # fused ops: auto, triton, torch, reference
    compile: bool | None = None  # torch.compile the teacher: None = with CUDA only (slower on CPU), true, false
    cuda_graph: bool | None = None  # capture each stage's step in a CUDA graph: None = on CUDA, true, false
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU), bf16, fp32
    progress: bool = True


@dataclass
class InversionConfig:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    fp: FalsePositiveConfig = field(default_factory=FalsePositiveConfig)
    job: JobConfig = field(default_factory=JobConfig)
    verifier: str | None = None  # a fastdiode checkpoint whose P/R/AP@0.5 on each batch's final targets is logged

    @property
    def num_stages(self) -> int:
        return len(self.stages.resolution)

    def validate(self) -> None:
        n = self.num_stages
        per_stage = {"stages.batch_size": self.stages.batch_size, "stages.lr": self.stages.lr,
                     "stages.lr_min": self.stages.lr_min, "stages.iterations": self.stages.iterations,
                     "stages.warmup": self.stages.warmup, "stages.betas": self.stages.betas,
                     "loss.first_bn_coef": self.loss.first_bn_coef, "augment.jitter": self.augment.jitter}
        if n == 0:
            raise ConfigError("stages.resolution: expected at least one stage")
        for key, values in per_stage.items():
            if len(values) != n:
                raise ConfigError(f"{key}: {len(values)} values, but stages.resolution has {n} stages "
                                  "(every per-stage list needs one value per stage)")
        for key, values in (("stages.batch_size", self.stages.batch_size), ("stages.resolution",
                            self.stages.resolution), ("stages.iterations", self.stages.iterations)):
            bad = [v for v in values if v <= 0]
            if bad:
                raise ConfigError(f"{key}: expected positive values, got {values}")
        if any(len(b) != 2 or not all(0 <= v < 1 for v in b) for b in self.stages.betas):
            raise ConfigError(f"stages.betas: expected [beta1, beta2] pairs in [0, 1), got {self.stages.betas}")
        if any(r % 32 for r in self.stages.resolution):
            raise ConfigError(f"stages.resolution: expected multiples of 32 (the detector's largest stride), "
                              f"got {self.stages.resolution}")
        choices = {"targets.sampler": (self.targets.sampler, ("onebox", "labels")),
                   "loss.bn_layers": (self.loss.bn_layers, ("all", "backbone")),
                   "job.precision": (self.job.precision, ("auto", "bf16", "fp32")),
                   "job.backend": (self.job.backend, ("auto", "triton", "torch", "reference"))}
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
        if self.targets.sampler == "labels" and not self.targets.labels:
            raise ConfigError("targets.labels: the 'labels' sampler needs a COCO json or YOLO labels folder")
        if not 0 < self.targets.min_size <= self.targets.max_size <= 1:
            raise ConfigError("targets.min_size/max_size: expected 0 < min_size <= max_size <= 1")
        if self.targets.capacity < 1 or self.job.num_batches < 1 or self.job.log_every < 1:
            raise ConfigError("targets.capacity, job.num_batches and job.log_every must be positive")
        if self.fp.enabled and self.fp.every < 1:
            raise ConfigError("fp.every: expected a positive number of steps")
