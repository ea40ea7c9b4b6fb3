"""A darknet-layout detector built from a layer list (a parsed .cfg or a built-in definition).

Conv + BatchNorm + LeakyReLU(0.1) blocks, shortcuts, routes, nearest upsampling, max-pooling and YOLO heads,
in darknet layer order (which is also the order of a .weights file). ``forward`` returns the raw head maps,
one (B, A, H, W, 5 + C) tensor per YOLO layer, in train and eval mode alike; :mod:`.postprocess` decodes them.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fastdiode.models.cfg import normalize_layer
from fastdiode.models.heads import YoloHead
from fastdiode.models.postprocess import postprocess
from fastdiode.models.yolo_loss import yolo_loss
from fastdiode.ops.frozen_conv import frozen_conv2d

ACTIVATIONS = {"leaky": lambda: nn.LeakyReLU(0.1), "linear": nn.Identity, "relu": nn.ReLU, "mish": nn.Mish,
               "swish": nn.SiLU, "logistic": nn.Sigmoid}


class ConvBlock(nn.Module):
    """Conv2d (+ BatchNorm2d) + activation; the conv has a bias only without BN, as in darknet.

    ``stat_tap``, when set (by :class:`fastdiode.losses.BNStatLoss`), replaces BN + activation: it is called as
    ``stat_tap(block, conv_output)`` and returns the block's output, so BN, activation and the BN-input
    statistics can run as one fused op.
    """

    def __init__(self, c_in: int, c_out: int, size: int, stride: int, batch_norm: bool, activation: str,
                 pad: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, size, stride, padding=size // 2 if pad else 0, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(c_out, momentum=0.03, eps=1e-4) if batch_norm else None
        self.act = ACTIVATIONS[activation]()
        self.stat_tap: Callable[[ConvBlock, torch.Tensor], torch.Tensor] | None = None

    def _frozen(self, x: torch.Tensor) -> bool:
        """Only the input needs a gradient (a frozen teacher under inversion): the input need not be saved."""
        return type(self.conv) is nn.Conv2d and x.requires_grad and torch.is_grad_enabled() and not any(
            p.requires_grad for p in self.conv.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = frozen_conv2d(x, self.conv) if self._frozen(x) else self.conv(x)
        if self.bn is None:
            return self.act(x)
        if self.stat_tap is not None:
            return self.stat_tap(self, x)
        return self.act(self.bn(x))


class MaxPool(nn.Module):
    """Darknet max-pooling: total padding size - 1 (asymmetric, right/bottom, when size is even), padded with
    -inf as darknet's C code does (its weights were trained so). The asymmetric padding is applied only when a
    window reaches it (not for size 2, stride 2 on an even input): the output is the same, without an
    input-sized copy in each direction.

    A difference from the authors' DIODE code, kept on purpose: their ultralytics port pads yolov3-tiny's size-2
    stride-1 max-pool with zeros, so after a leaky ReLU with negative values the last row and column of its head
    maps differ. yolov3-tiny is DIODE's verifier only; fastdiode follows darknet, which defines the weights."""

    def __init__(self, size: int, stride: int):
        super().__init__()
        pad = size - 1
        self.size, self.stride = size, stride
        self.pad = (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2) if pad % 2 else None
        self.pool = nn.MaxPool2d(size, stride, padding=0 if pad % 2 else pad // 2)

    def _needs_pad(self, x: torch.Tensor) -> bool:
        if self.pad is None:
            return False
        if self.pad[0]:
            return True
        return any((n + self.pad[1] - self.size) // self.stride != (n - self.size) // self.stride
                   for n in x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._needs_pad(x):
            x = nn.functional.pad(x, self.pad, value=float("-inf"))
        return self.pool(x)


def _resolve(index: int, ref: int) -> int:
    """Darknet layer references: negative is relative to the current layer, non-negative is absolute."""
    return index + ref if ref < 0 else ref


class Darknet(nn.Module):
    """A detector defined by a darknet layer list; ``heads`` are its YOLO layers in output order."""

    def __init__(self, layers: list[dict], in_channels: int = 3, input_size: int = 416, name: str = "darknet"):
        super().__init__()
        layers = [normalize_layer(s) for s in layers]
        self.name, self.input_size, self.layer_specs = name, input_size, layers
        self.blocks = nn.ModuleList()
        self.inputs: list[list[int]] = []  # for each layer, the earlier layers it reads besides the previous one
        channels: list[int] = []
        strides: list[int] = []
        c, s = in_channels, 1
        for i, spec in enumerate(layers):
            kind = spec["type"]
            refs: list[int] = []
            if kind == "convolutional":
                if spec["activation"] not in ACTIVATIONS:
                    raise ValueError(f"layer {i} [convolutional]: activation {spec['activation']!r} is not one "
                                     f"of {', '.join(ACTIVATIONS)}")
                block = ConvBlock(c, spec["filters"], spec["size"], spec["stride"], bool(spec["batch_normalize"]),
                                  spec["activation"], bool(spec["pad"]))
                c, s = spec["filters"], s * spec["stride"]
            elif kind == "shortcut":
                refs = [_resolve(i, spec["from"] if isinstance(spec["from"], int) else spec["from"][0])]
                block = ACTIVATIONS[spec["activation"]]()
            elif kind == "route":
                refs = [_resolve(i, r) for r in (spec["layers"] if isinstance(spec["layers"], list)
                                                 else [spec["layers"]])]
                block = nn.Identity()
                c, s = sum(channels[r] for r in refs), strides[refs[0]]
            elif kind == "upsample":
                block = nn.Upsample(scale_factor=spec["stride"], mode="nearest")
                s //= spec["stride"]
            elif kind == "maxpool":
                block = MaxPool(spec["size"], spec["stride"])
                s *= spec["stride"]
            elif kind == "yolo":
                anchors = spec["anchors"]
                pairs = [(float(anchors[2 * k]), float(anchors[2 * k + 1])) for k in range(len(anchors) // 2)]
                mask = spec["mask"] if isinstance(spec["mask"], list) else [spec["mask"]]
                block = YoloHead([pairs[m] for m in mask], spec["classes"], s)
                if c != len(mask) * (5 + spec["classes"]):
                    raise ValueError(f"layer {i} [yolo]: the conv before it has {c} filters, expected "
                                     f"{len(mask)} anchors x (5 + {spec['classes']} classes) = "
                                     f"{len(mask) * (5 + spec['classes'])}")
            else:
                raise ValueError(f"layer {i}: unsupported layer type {kind!r}")
            if any(r < 0 or r >= i for r in refs):
                raise ValueError(f"layer {i} [{kind}]: refers to layer(s) {refs} outside 0..{i - 1}")
            self.blocks.append(block)
            self.inputs.append(refs)
            channels.append(c)
            strides.append(s)
        self.strides = strides  # each layer's output stride
        self.kept = sorted({r for refs in self.inputs for r in refs})
        self.heads = [b for b in self.blocks if isinstance(b, YoloHead)]
        if not self.heads:
            raise ValueError(f"{name}: the layer list has no [yolo] layer")
        self.num_classes = self.heads[0].num_classes

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        saved: dict[int, torch.Tensor] = {}
        outputs = []
        for i, (block, refs) in enumerate(zip(self.blocks, self.inputs)):
            kind = self.layer_specs[i]["type"]
            if kind == "route":
                x = saved[refs[0]] if len(refs) == 1 else torch.cat([saved[r] for r in refs], 1)
            elif kind == "shortcut":
                x = block(x + saved[refs[0]])
            else:
                x = block(x)
            if kind == "yolo":
                outputs.append(x)
            if i in self.kept:
                saved[i] = x
        return outputs

    # ---- the detector seam (fastdiode.models.detector.Detector) ------------------------------------------
    def task_loss(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The YOLO loss (:func:`fastdiode.models.yolo_loss.yolo_loss`) against padded (B, K, 5) targets."""
        return yolo_loss(preds, targets, self)

    def detect(self, preds: list[torch.Tensor], conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
               multi_label: bool = False, min_wh: float = 0.0) -> list[torch.Tensor]:
        """Per image, (n, 6) ``x1, y1, x2, y2, score, class`` in input pixels, after NMS, best first."""
        return postprocess(preds, conf_thres, iou_thres, max_det, self, multi_label, min_wh=min_wh)

    def feature_points(self) -> dict[str, list[str]]:
        """Named distillation points, as module names: ``backbone``, the last backbone layer at each of the
        strides 8, 16 and 32 it reaches (the stage outputs); ``neck``, per YOLO head, the layer that feeds its
        output conv (the "FPN levels" of a YOLO), in head order."""
        end = self.backbone_layers()
        stages = [max((i for i in range(end) if self.strides[i] == s), default=None) for s in (8, 16, 32)]
        heads = [i for i, spec in enumerate(self.layer_specs) if spec["type"] == "yolo"]
        return {"backbone": [f"blocks.{i}" for i in stages if i is not None],
                "neck": [f"blocks.{i - 2}" for i in heads]}

    def checkpoint_spec(self) -> dict:
        """What :func:`fastdiode.models.checkpoint.load` needs to rebuild this model (JSON-able)."""
        return {"architecture": "darknet", "name": self.name, "anchors": [h.anchors.tolist() for h in self.heads],
                "strides": [h.stride for h in self.heads], "layers": self.layer_specs}

    @classmethod
    def from_checkpoint_spec(cls, spec: dict, input_size: int) -> Darknet:
        return cls(spec["layers"], input_size=input_size, name=spec["name"])

    def backbone_layers(self) -> int:
        """How many leading layers form the backbone: every layer before the first 1x1 convolution of the run of
        convolutions, max-pools and routes that leads into the first YOLO layer. Darknet-53 (yolov3, yolov3-spp):
        layers 0-74 with its 52 BN convolutions (the authors' ``module_list[0:74]``); yolov3-tiny: layers 0-12
        (7 convolutions, up to the 1024-channel one); yolo-micro: every layer before its first 1x1 convolution."""
        first_head = next(i for i, spec in enumerate(self.layer_specs) if spec["type"] == "yolo")
        start = first_head
        while start > 0 and self.layer_specs[start - 1]["type"] in ("convolutional", "maxpool", "route"):
            start -= 1
        return next((i for i in range(start, first_head) if self.layer_specs[i]["type"] == "convolutional"
                     and self.layer_specs[i]["size"] == 1), start)

    def backbone_modules(self) -> list[nn.Module]:
        """The backbone's blocks (see :meth:`backbone_layers`)."""
        return list(self.blocks[: self.backbone_layers()])

    def conv_blocks(self) -> list[ConvBlock]:
        """The conv layers in darknet order: the order of their parameters in a .weights file."""
        return [b for b in self.blocks if isinstance(b, ConvBlock)]
