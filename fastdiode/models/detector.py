"""The detector seam: what the inversion engine, the trainer and the evaluation need of a detector, and
nothing more. fastdiode's Darknet models implement it; any other detector that does can be inverted,
distilled and evaluated by the same engines (the authors' answer to "how do I invert another detector":
swap the model and the task loss).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Detector(Protocol):
    """A detector as the engines see it (an ``nn.Module``).

    * ``model(images)`` returns its raw head outputs, a list of tensors: the task loss and ``detect`` read them,
      and mimic learning compares a student's with a teacher's of the same layout.
    * ``task_loss(preds, targets)`` takes padded (B, K, 5) ``cls, xc, yc, w, h`` targets (normalised; cls < 0
      is padding) and returns (loss, detached parts). It must be fixed-shape and sync-free: the inversion
      step compiles it and captures it in a CUDA graph.
    * ``detect(preds, conf_thres, iou_thres, max_det, multi_label, min_wh)`` returns per image an (n, 6)
      ``x1, y1, x2, y2, score, class`` tensor in input pixels (Y_fp sampling and evaluation).
    * ``feature_points()`` names the module paths of its distillation points (``"backbone"``, ``"neck"``).
    * ``checkpoint_spec()`` returns a JSON-able dict with an ``architecture`` key registered in
      :mod:`fastdiode.models.checkpoint`, from which the model can be rebuilt.
    * ``num_classes`` and ``input_size`` (the evaluation's default letterbox size).
    """

    num_classes: int
    input_size: int

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]: ...

    def task_loss(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def detect(self, preds: list[torch.Tensor], conf_thres: float = 0.001, iou_thres: float = 0.6,
               max_det: int = 300, multi_label: bool = False, min_wh: float = 0.0) -> list[torch.Tensor]: ...

    def feature_points(self) -> dict[str, list[str]]: ...

    def checkpoint_spec(self) -> dict: ...
