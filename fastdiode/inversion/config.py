"""The inversion config (method.md §2–6). Defaults are the paper's values (Tables 1 and 2); the authors'
code settings live in configs/diode_reference_code.yaml. Per-stage values are lists, one entry per stage."""
from __future__ import annotations

from dataclasses import dataclass, field

from fastdiode import augment as paper_augment
from fastdiode.config import ConfigError, RunConfig, TeacherConfig


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


@dataclass(frozen=True)
class StageSpec:
    """One stage's schedule, read off :class:`StagesConfig`: its resolution, chunk size, iterations and Adam's
    learning-rate schedule (:func:`fastdiode.runtime.schedule.lr_at`) and betas."""

    resolution: int
    batch_size: int
    iterations: int
    lr: float
    lr_min: float
    warmup: float
    betas: tuple[float, float]


@dataclass
class InversionLossConfig:
    """The weights of the inversion objective (method.md §2):
    L = det·L_det + bn·Σ_l w_l r_l + first_bn_coef·r_0 + tv_l1·TV_L1 + tv_l2·TV_L2 + l2·L_l2,
    with the first-layer term outside the α_BN scale, as in the authors' code."""

    det: float | list[float] = 1.0  # the multiplier m of the detection loss: one value, or one per stage
    bn: float = 0.1
    tv_l1: float = 75.0
    tv_l2: float = 0.0
    l2: float = 1e-7
    bn_p: float = 2.0
    bn_layers: str = "all"  # "all" or "backbone" (DIODE hooks the Darknet-53 backbone only)
    # How many of the selected BN layers enter Σ_l r_l, per stage (the authors' --num_layers); -1: all.
    bn_num_layers: int | list[int] = -1
    first_bn_coef: list[float] = field(default_factory=lambda: [2.0, 0.0, 0.0])
    cosine_layer_decay: bool = False


@dataclass
class AugmentConfig:
    jitter: list[int] = field(default_factory=lambda: [20, 40, 52])  # J = H / 8 per stage
    flip_p: float = paper_augment.FLIP_P
    brightness: float = paper_augment.BRIGHTNESS
    contrast: float = paper_augment.CONTRAST
    erase_p: float = paper_augment.ERASE_P
    same_on_batch: bool = True
    # "side": boxes under 2 px wide or high after a step's shift are dropped; "area": the authors' rule (under
    # 1 px², only when the image is shifted); see fastdiode.augment
    box_drop: str = "side"


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
    """Y_fp sampling (paper Table 2): after global iteration n (counting from 1) for every n with
    warmup <= n <= stop and n % every == 0, as the authors' code (their iterations 800, 900, ..., 2800).

    Where fastdiode's defaults differ from the authors' code (configs/diode_reference_code.yaml has theirs):
    ``multi_label`` false (each predicted box enters once, with its best class; theirs can add one box once per
    class above ``conf``), ``clip`` "image" (boxes are clipped to the image and the area filter measures the
    visible part; theirs clamp at 0 only and filter on the unclipped box), ``min_side`` 0 (the area filter
    already removes tiny boxes; theirs drop boxes with a side <= 2 px before NMS), ``early_exit`` false (the
    stage that holds iteration ``stop`` runs to its end; theirs ends it there: Table 2's "early exit")."""

    enabled: bool = True
    warmup: int = 800
    every: int = 100
    stop: int = 2800
    conf: float = 0.2
    iou: float = 0.35
    min_area: float = 0.01
    max_area: float = 0.85
    nms_iou: float = 0.5
    multi_label: bool = False
    clip: str = "image"  # "image" (clip to [0, 1]) or "zero" (clamp at 0 only, as the authors)
    min_side: float = 0.0  # pixels: boxes with a side <= this are dropped before NMS (the authors: 2)
    early_exit: bool = False  # end the stage holding iteration ``stop`` there

    def samples_after(self, n: int) -> bool:
        """Whether Y_fp runs after global iteration ``n`` (counted from 1)."""
        return self.enabled and self.warmup <= n <= self.stop and n % self.every == 0

    def exits_after(self, n: int) -> bool:
        """Whether the stage ends after global iteration ``n`` (the authors' early exit)."""
        return self.enabled and self.early_exit and n == self.stop


@dataclass
class JobConfig:
    out: str = "runs/invert"
    num_batches: int = 1  # job batches of InversionConfig.batch_images (the first stage's batch size) each
    seed: int = 0
    log_every: int = 50  # losses are read (and checked for NaN/Inf) every this many steps
    cuda_graph: bool | None = None  # capture each stage's step in a CUDA graph: None = on CUDA, true, false
    progress: bool = True


@dataclass
class InversionConfig:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    loss: InversionLossConfig = field(default_factory=InversionLossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    fp: FalsePositiveConfig = field(default_factory=FalsePositiveConfig)
    job: JobConfig = field(default_factory=JobConfig)
    run: RunConfig = field(default_factory=RunConfig)  # device, precision, teacher compilation, fused-op backend
    verifier: str | None = None  # a fastdiode checkpoint whose P/R/AP@0.5 on each batch's final targets is logged

    @property
    def num_stages(self) -> int:
        return len(self.stages.resolution)

    @property
    def batch_images(self) -> int:
        """Images per job batch: the first stage's batch size (later stages re-batch them)."""
        return self.stages.batch_size[0]

    def stage(self, index: int) -> StageSpec:
        st = self.stages
        return StageSpec(st.resolution[index], st.batch_size[index], st.iterations[index], st.lr[index],
                         st.lr_min[index], st.warmup[index], tuple(st.betas[index]))

    def run_iterations(self) -> list[int]:
        """Iterations each stage runs: ``stages.iterations``, with the stage that holds ``fp.stop`` cut there
        when ``fp.early_exit`` is on."""
        runs, start = [], 0
        for iters in self.stages.iterations:
            cut = self.fp.enabled and self.fp.early_exit and start < self.fp.stop <= start + iters
            runs.append(self.fp.stop - start if cut else iters)
            start += iters
        return runs

    def det_weight(self, stage: int) -> float:
        """The detection-loss multiplier m of ``stage``."""
        det = self.loss.det
        return float(det[stage] if isinstance(det, list) else det)

    def bn_num_layers(self, stage: int, selected: int) -> int:
        """How many of the ``selected`` BN layers enter L_BN at ``stage``."""
        n = self.loss.bn_num_layers
        n = n[stage] if isinstance(n, list) else n
        return selected if n < 0 else min(n, selected)

    def validate(self) -> None:
        n = self.num_stages
        per_stage = {"stages.batch_size": self.stages.batch_size, "stages.lr": self.stages.lr,
                     "stages.lr_min": self.stages.lr_min, "stages.iterations": self.stages.iterations,
                     "stages.warmup": self.stages.warmup, "stages.betas": self.stages.betas,
                     "loss.first_bn_coef": self.loss.first_bn_coef, "augment.jitter": self.augment.jitter}
        per_stage.update({k: v for k, v in (("loss.det", self.loss.det), ("loss.bn_num_layers",
                                                                          self.loss.bn_num_layers))
                          if isinstance(v, list)})
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
                   "fp.clip": (self.fp.clip, ("image", "zero")),
                   "augment.box_drop": (self.augment.box_drop, paper_augment.BOX_DROPS)}
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
        self.run.validate()
        if self.targets.sampler == "labels" and not self.targets.labels:
            raise ConfigError("targets.labels: the 'labels' sampler needs a COCO json or YOLO labels folder")
        if not 0 < self.targets.min_size <= self.targets.max_size <= 1:
            raise ConfigError("targets.min_size/max_size: expected 0 < min_size <= max_size <= 1")
        if self.targets.capacity < 1 or self.job.num_batches < 1 or self.job.log_every < 1:
            raise ConfigError("targets.capacity, job.num_batches and job.log_every must be positive")
        if self.fp.enabled and self.fp.every < 1:
            raise ConfigError("fp.every: expected a positive number of steps")
        if self.fp.min_side < 0:
            raise ConfigError(f"fp.min_side: expected a size in pixels >= 0, got {self.fp.min_side}")
