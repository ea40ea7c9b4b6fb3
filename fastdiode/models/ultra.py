"""The YOLOv8 / YOLO11 detection family (ultralytics' anchor-free detectors with DFL heads) as fastdiode
detectors: built from a model description (:mod:`.ultra_description`), ultralytics' module and state-dict layout,
and the detector seam (:class:`fastdiode.models.detector.Detector`) on top.

``model(x)`` returns the raw per-level head maps (B, 4 * reg_max + nc, H, W) at strides 8/16/32, in train and
eval mode alike; ``task_loss`` is ultralytics' v8 loss in fixed shapes (:mod:`.ultra_loss`); ``detect`` decodes
and runs NMS (:mod:`.ultra_decode`).
"""
from __future__ import annotations

import copy
import re

import torch
from torch import nn

from fastdiode.models import ultra_decode
from fastdiode.models.ultra_description import build_layers, load_description
from fastdiode.models.ultra_loss import v8_loss

# fastdiode's names: a family's description at a scale, e.g. yolov8n, yolo11s, yolov8-micro
NAME = re.compile(r"^(yolov8|yolo11)-?(micro|[nsmlx])$")
STRIDE_PROBE = 256  # ultralytics' probe size for the head strides


class UltraYOLO(nn.Module):
    """A YOLOv8/11 detector of ``description`` at ``scale`` with ``num_classes`` classes. ``input_size`` is the
    evaluation's default letterbox size."""

    checkpoint_kind = "detector"

    def __init__(self, description: dict, scale: str | None, num_classes: int, input_size: int = 640,
                 name: str = "yolo"):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes: expected a positive number of classes, got {num_classes}")
        self.description, self.scale = {**copy.deepcopy(description), "nc": num_classes}, scale
        self.num_classes, self.input_size, self.name = num_classes, input_size, name
        built = build_layers(self.description, scale, num_classes)
        self.model = nn.Sequential(*built.layers)
        self.froms, self.save, self.backbone_size = built.froms, set(built.save), built.backbone
        head = self.head
        with torch.no_grad():
            probe = self.eval()(torch.zeros(1, 3, STRIDE_PROBE, STRIDE_PROBE))
        self.train()
        head.stride.copy_(torch.tensor([STRIDE_PROBE / p.shape[-2] for p in probe]))
        self.strides = head.stride.tolist()
        head.bias_init()

    @property
    def head(self) -> nn.Module:
        return self.model[-1]

    @property
    def reg_max(self) -> int:
        return self.head.reg_max

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._run(x, len(self.model), self.save)[-1]

    def _run(self, x: torch.Tensor, layers: int, keep: set[int]) -> list:
        """The outputs of the first ``layers`` layers (those not in ``keep`` dropped as soon as unused: None),
        each layer reading its ``from`` inputs, as ultralytics' forward does."""
        outputs: list = []
        for i, (layer, f) in enumerate(zip(self.model[:layers], self.froms)):
            if f != -1:
                x = outputs[f] if isinstance(f, int) else [x if j == -1 else outputs[j] for j in f]
            x = layer(x)
            outputs.append(x if i in keep or i == layers - 1 else None)
        return outputs

    # ---- the detector seam (fastdiode.models.detector.Detector) ------------------------------------------
    def task_loss(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ultralytics' v8 detection loss (:func:`fastdiode.models.ultra_loss.v8_loss`): (loss, [box, cls, dfl])."""
        return v8_loss(preds, targets, self.strides, self.reg_max)

    def detect(self, preds: list[torch.Tensor], conf_thres: float = 0.001, iou_thres: float = 0.7, max_det: int = 300,
               multi_label: bool = False, min_wh: float = 0.0) -> list[torch.Tensor]:
        """Per image, (n, 6) ``x1, y1, x2, y2, score, class`` in input pixels, after NMS, best first."""
        return ultra_decode.detect(preds, self.strides, self.reg_max, conf_thres, iou_thres, max_det, multi_label,
                                   min_wh)

    def feature_points(self) -> dict[str, list[str]]:
        """``backbone``: the last backbone layer at each of the strides 8, 16 and 32 (P3, P4, P5); ``neck``: the
        three inputs of Detect, in level order."""
        size, every = STRIDE_PROBE, set(range(self.backbone_size))
        with torch.no_grad():
            probe = torch.zeros(1, 3, size, size, device=next(self.parameters()).device)
            outputs = self._run(probe, self.backbone_size, every)
        strides = {size // y.shape[-1]: i for i, y in enumerate(outputs)}  # the last layer at each stride
        return {"backbone": [f"model.{strides[s]}" for s in (8, 16, 32) if s in strides],
                "neck": [f"model.{i}" for i in self.froms[-1]]}

    def checkpoint_spec(self) -> dict:
        return {"architecture": "ultralytics-yolo", "name": self.name, "scale": self.scale,
                "description": self.description, "strides": self.strides}

    @classmethod
    def from_checkpoint_spec(cls, spec: dict, input_size: int) -> UltraYOLO:
        return cls(spec["description"], spec["scale"], spec["num_classes"], input_size, spec["name"])

    def backbone_modules(self) -> list[nn.Module]:
        """The description's ``backbone`` layers (``loss.bn_layers: backbone``)."""
        return list(self.model[: self.backbone_size])


def build_ultra(name: str, num_classes: int = 80, input_size: int | None = None) -> UltraYOLO:
    """``yolov8n`` ... ``yolov8x``, ``yolo11n`` ... ``yolo11x``, ``yolov8-micro``, ``yolo11-micro``."""
    match = NAME.match(name)
    if match is None:
        raise ValueError(f"model {name!r}: not a YOLOv8/YOLO11 name (yolov8n ... yolov8x, yolo11n ... yolo11x, "
                         "yolov8-micro, yolo11-micro)")
    family, scale = match.groups()
    default_size = 96 if scale == "micro" else 640
    return UltraYOLO(load_description(family), scale, num_classes, input_size or default_size, name)
