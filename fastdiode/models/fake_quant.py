"""Fake-quantized detectors for quantization-aware training (method.md §12, DFQ-Dojo's zero-shot QAT).

:func:`fake_quantize` turns an FP detector into its quantized copy, in place:

1. **BN is folded into the convs first** (``fold_batchnorm``), so the weight quantizer sees the weights the
   deployed int8 conv multiplies by (the int8 export folds BN too), and the teacher's BN statistics cannot drift
   on synthetic batches. The price: BN's affine parameters train only through the folded weights.
2. **Every conv that runs** gets an LSQ quantizer on its weight (per tensor, or per output channel) and one on its
   input (per tensor), both symmetric and signed, as DFQ-Dojo's ``QuantConv2d``. The first conv and the head's
   output convs (those that had no BN: YOLOv3's 1x1 before each [yolo] layer, YOLOv8/11's last conv of each
   ``cv2``/``cv3`` branch) stay in float by default.

A quantizer's step starts at 2·mean|x|/√Q_p on the first batch (:func:`initialize_steps`); its gradient is
scaled by LSQ's g = 1/√(N·Q_p), N the tensor's size (as DFQ-Dojo's code). The op is
:func:`fastdiode.ops.lsq_fake_quant`. A model made here carries its :class:`QuantSpec` as ``model.fake_quant``;
:mod:`fastdiode.models.checkpoint` saves it and rebuilds the same structure on load.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fastdiode.ops.lsq import lsq_fake_quant

BITS = (2, 3, 4, 5, 6, 7, 8)


@dataclass(frozen=True)
class QuantSpec:
    """What is fake-quantized and how."""

    weight_bits: int = 8
    act_bits: int = 8
    weight_per_channel: bool = False  # one step per output channel (else one per tensor: the paper's)
    float_first: bool = True  # the first conv stays in float
    float_head: bool = True  # the head's output convs stay in float

    def __post_init__(self):
        for key, bits in (("weight_bits", self.weight_bits), ("act_bits", self.act_bits)):
            if bits not in BITS:
                raise ValueError(f"quant.{key}: expected one of {', '.join(map(str, BITS))}, got {bits}")

    @property
    def name(self) -> str:
        return f"W{self.weight_bits}A{self.act_bits}"

    def to_dict(self) -> dict:
        return asdict(self)


class LSQQuantizer(nn.Module):
    """Symmetric signed LSQ fake quantization to ``bits`` with ``channels`` learned steps (1: per tensor; else one
    per index of dim 0). The step is set from the data while :attr:`calibrating` (:func:`initialize_steps`)."""

    def __init__(self, bits: int, channels: int = 1, backend: str | None = None):
        super().__init__()
        self.qmin, self.qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        self.step = nn.Parameter(torch.ones(channels))
        self.backend = backend
        self.calibrating = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            with torch.no_grad():
                mean = x.detach().abs().float().flatten(1).mean(1) if self.step.numel() > 1 else \
                    x.detach().abs().float().mean()[None]
                self.step.copy_((2 * mean / math.sqrt(self.qmax)).clamp_min(1e-8))
        return lsq_fake_quant(x, self.step, self.qmin, self.qmax, 1.0 / math.sqrt(x.numel() * self.qmax),
                              self.backend)

    def extra_repr(self) -> str:
        return f"[{self.qmin}, {self.qmax}], {self.step.numel()} step(s)"


class QuantConv2d(nn.Module):
    """A conv whose input and weight pass through LSQ quantizers; ``conv`` keeps the FP weights it trains."""

    def __init__(self, conv: nn.Conv2d, spec: QuantSpec, backend: str | None = None):
        super().__init__()
        self.conv = conv
        self.weight_quant = LSQQuantizer(spec.weight_bits, conv.out_channels if spec.weight_per_channel else 1,
                                         backend)
        self.input_quant = LSQQuantizer(spec.act_bits, 1, backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(self.input_quant(x), self.weight_quant(c.weight), c.bias, c.stride, c.padding, c.dilation,
                        c.groups)


def _bn_pairs(model: nn.Module) -> list[nn.Module]:
    """The blocks with a ``conv`` (nn.Conv2d) followed by a ``bn`` (nn.BatchNorm2d): both families' conv blocks."""
    return [m for m in model.modules() if isinstance(getattr(m, "conv", None), nn.Conv2d)
            and isinstance(getattr(m, "bn", None), nn.BatchNorm2d)]


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each conv block's BatchNorm (its running statistics and affine) into its conv, in place: the conv
    gains a bias, ``bn`` becomes an identity. The model computes the same function in eval mode."""
    for block in _bn_pairs(model):
        conv, bn = block.conv, block.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale + (conv.bias * scale if conv.bias is not None else 0)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        if conv.bias is None:
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype))
        else:
            conv.bias.copy_(bias)
        block.bn = nn.Identity()
    return model


def running_convs(model: nn.Module) -> list[str]:
    """The names of the convs (nn.Conv2d or :class:`QuantConv2d`) a forward pass runs, in the order they first run
    (a probe at the model's input size): the same names on an FP detector and on its fake-quantized copy."""
    size = max(32, getattr(model, "input_size", 64) // 32 * 32)
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda m, a, n=name: order.append(n))
               for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, QuantConv2d))]
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return list(dict.fromkeys(order))


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def fake_quantize(model: nn.Module, spec: QuantSpec, backend: str | None = None) -> nn.Module:
    """``model`` (an FP detector) made a fake-quantized one in place, as the module docstring says; returns it.
    ``model.fake_quant`` holds the spec; ``model.float_convs`` names the convs left in float."""
    if getattr(model, "fake_quant", None) is not None:
        raise ValueError("the model is already fake-quantized")
    convs = running_convs(model)
    pairs = {id(m) for m in _bn_pairs(model)}
    with_bn = {f"{name}.conv" if name else "conv" for name, m in model.named_modules() if id(m) in pairs}
    head = [n for n in convs if n not in with_bn]
    keep = set(head if spec.float_head else []) | ({convs[0]} if spec.float_first and convs else set())
    fold_batchnorm(model)
    modules = dict(model.named_modules())
    for name in convs:
        if name not in keep:
            _set(model, name, QuantConv2d(modules[name], spec, backend))
    model.fake_quant = spec
    model.checkpoint_kind = "fake-quant-detector"
    model.float_convs = [n for n in convs if n in keep]
    return model


@torch.no_grad()
def with_quantized_weights(model: nn.Module) -> nn.Module:
    """A float copy of a fake-quantized ``model`` whose convs hold their fake-quantized weights, without
    quantizers: what the int8 export calibrates (activation ranges are calibrated again there, on its own
    grid)."""
    out = copy.deepcopy(model)
    for name, m in list(out.named_modules()):
        if isinstance(m, QuantConv2d):
            m.conv.weight.copy_(m.weight_quant(m.conv.weight))
            _set(out, name, m.conv)
    for attr in ("fake_quant", "checkpoint_kind", "float_convs"):
        out.__dict__.pop(attr, None)
    return out


def quantizers(model: nn.Module) -> list[LSQQuantizer]:
    return [m for m in model.modules() if isinstance(m, LSQQuantizer)]


@contextlib.contextmanager
def _calibrating(model: nn.Module):
    qs = quantizers(model)
    for q in qs:
        q.calibrating = True
    try:
        yield
    finally:
        for q in qs:
            q.calibrating = False


@torch.no_grad()
def initialize_steps(model: nn.Module, images: torch.Tensor) -> None:
    """Set every quantizer's step to 2·mean|x|/√Q_p of what it sees on ``images`` (LSQ's initialisation; weights
    see their own values)."""
    was = model.training
    with _calibrating(model):
        model.eval()(images)
    model.train(was)


def fake_quant_mse(model: nn.Module) -> dict[str, float]:
    """Per quantized conv, the relative squared error its weight quantizer makes: ||w_q − w||² / ||w||² (which
    layers lose most, for the reports)."""
    out = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, QuantConv2d):
                w = m.conv.weight.float()
                out[name] = float(((m.weight_quant(w) - w) ** 2).sum() / (w ** 2).sum().clamp_min(1e-12))
    return out
