"""``fastdiode quantize``'s config (method.md §12). ``mode=ptq``: post-training int8 through torchao's PT2E flow,
calibrated on ``calib``; ``mode=qat``: quantization-aware distillation of a fake-quantized copy of the teacher on
the shared step loop, with DFQ-Dojo's recipe as the defaults (Adam lr 1e-5, batch 16, no augmentation; KL τ 4 at
0.1, MSE on every conv output at 1.0, the task loss on the teacher's pseudo-labels at 0.01), then exported as PTQ
is (W8A8) or kept fake-quantized (W4)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from fastdiode.config import ConfigError, RunConfig, TeacherConfig
from fastdiode.distill.config import (
    DataConfig,
    DistillLossConfig,
    OptimConfig,
    StudentConfig,
    TrainConfig,
    TrainLoopConfig,
)
from fastdiode.distill.terms.quant_kd import HeadKLTermConfig, LayerMSETermConfig, PseudoLabelTermConfig
from fastdiode.models.fake_quant import BITS, QuantSpec

MODES = ("ptq", "qat")


@dataclass
class CalibConfig:
    """The images that calibrate the activation ranges (PTQ, and the int8 export after QAT) and initialise the
    LSQ steps (QAT). ``calib=PATH`` is short for ``calib.data=PATH``."""

    SHORTHAND: ClassVar[str] = "data"
    data: str = ""  # a dataset folder as fastdiode invert writes it, or any folder of images
    images: int = 128  # drawn without replacement, seeded
    batch_size: int = 16
    seed: int = 0


@dataclass
class QuantConfig:
    """What is quantized, and to how many bits (QAT; PTQ is W8A8: X86InductorQuantizer's per-channel int8
    weights, per-tensor uint8 activations)."""

    weight_bits: int = 8
    act_bits: int = 8
    weight_per_channel: bool = False  # LSQ step per output channel (default: per tensor, the paper's)
    float_first: bool = True  # the first conv stays in float
    float_head: bool = True  # the head's output convs stay in float

    def spec(self) -> QuantSpec:
        return QuantSpec(self.weight_bits, self.act_bits, self.weight_per_channel, self.float_first, self.float_head)


def _qat_data() -> DataConfig:
    return DataConfig(flip_p=0.0, hue=0.0, saturation=0.0, value=0.0, capacity=32)  # no augmentation (DFQ-Dojo)


def _qat_optim() -> OptimConfig:
    return OptimConfig(lr=1e-5, lr_min=1e-7, weight_decay=0.0005, warmup=0.0)


def _qat_loss() -> DistillLossConfig:
    return DistillLossConfig(distill=0.0, label=0.0, head_kl=HeadKLTermConfig(weight=0.1, temperature=4.0),
                             layer_mse=LayerMSETermConfig(weight=1.0), pseudo_label=PseudoLabelTermConfig(weight=0.01))


def _qat_train() -> TrainLoopConfig:
    return TrainLoopConfig(steps=2000, batch_size=16, eval_every=0, log_every=50, checkpoint_every=500, img_size=0,
                           eval_size=0, channels_last=False)


@dataclass
class QuantizeConfig:
    mode: str = "ptq"  # ptq | qat
    teacher: TeacherConfig = field(default_factory=TeacherConfig)  # the FP detector to quantize
    calib: CalibConfig = field(default_factory=CalibConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    out: str = "runs/quantize"  # the run folder (both modes; QAT's checkpoints and metrics go here too)
    size: int = 0  # input size the model is quantized and exported at; 0: the teacher's
    int8: bool | None = None  # write the deployable int8 program (model.pt2); None: when W8A8 (the only bits it runs)
    val: str | None = None  # a labelled dataset to report mAP on at the end (never used to choose anything)
    latency: bool = False  # time the int8 program against the compiled FP32 model at the end (batch 1 and 16)
    # QAT only: the shared loop's sections, DFQ-Dojo's values as defaults; data.train defaults to calib.data
    data: DataConfig = field(default_factory=_qat_data)
    optim: OptimConfig = field(default_factory=_qat_optim)
    loss: DistillLossConfig = field(default_factory=_qat_loss)
    train: TrainLoopConfig = field(default_factory=_qat_train)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if not self.teacher.weights:
            raise ConfigError("teacher: required: the FP detector to quantize (teacher=PATH)")
        if not self.calib.data:
            raise ConfigError("calib.data: required: a folder of calibration images (calib=PATH), e.g. what "
                              "fastdiode invert wrote")
        c = self.calib
        if c.images < 1 or c.batch_size < 1:
            raise ConfigError(f"calib.images, calib.batch_size: expected >= 1, got {c.images}, {c.batch_size}")
        for key, bits in (("quant.weight_bits", self.quant.weight_bits), ("quant.act_bits", self.quant.act_bits)):
            if bits not in BITS:
                raise ConfigError(f"{key}: expected one of {', '.join(map(str, BITS))}, got {bits}")
        if self.size and (self.size < 32 or self.size % 32):
            raise ConfigError(f"size: {self.size} is not a positive multiple of 32 (0: the teacher's input size)")
        if self.mode == "ptq" and (self.quant.weight_bits, self.quant.act_bits) != (8, 8):
            raise ConfigError(f"quant: W{self.quant.weight_bits}A{self.quant.act_bits} asked of mode=ptq, whose int8 "
                              "backend (X86InductorQuantizer) runs W8A8 only; use mode=qat for fewer bits")
        w8a8 = (self.quant.weight_bits, self.quant.act_bits) == (8, 8)
        if self.int8 and not w8a8:
            raise ConfigError(f"int8: the int8 export runs W8A8 only, and quant asks for {self.quant.spec().name}; "
                              "drop int8=true (fewer bits are evaluated fake-quantized)")
        if self.train.out != TrainLoopConfig.out:
            raise ConfigError("train.out: not read by fastdiode quantize; its run folder is out=PATH")
        if self.mode == "qat":
            self.train_config(self.size or 32).validate()

    @property
    def exports_int8(self) -> bool:
        """Whether the run ends with a deployable int8 program: asked for, and W8A8."""
        return self.int8 is not False and (self.quant.weight_bits, self.quant.act_bits) == (8, 8)

    def train_config(self, size: int) -> TrainConfig:
        """The distillation trainer's config of QAT at ``size`` px: the student is the teacher's fake-quantized
        copy (built by the engine), the run folder ``out``."""
        train = TrainLoopConfig(**{**vars(self.train), "out": self.out, "img_size": self.train.img_size or size,
                                   "eval_size": self.train.eval_size or size})
        data = DataConfig(**{**vars(self.data), "train": self.data.train or self.calib.data,
                             "val": self.data.val or self.val})
        return TrainConfig(student=StudentConfig(), teacher=self.teacher, data=data, optim=self.optim,
                           loss=self.loss, train=train, run=self.run)
