"""DICOD's classifier-to-detector distillation (Guo, Alvarez and Salzmann, NeurIPS 2021; method.md §8) for
one-stage YOLO detectors: a classification teacher, trained on object crops, teaches the detector's positive
anchors their classes and their boxes.

Both losses read the positives from the YOLO loss's own target assignment
(:func:`fastdiode.models.yolo_assign.assign_targets`), every (image, target, anchor) candidate computed and
masked, so shapes never depend on the data and nothing syncs with the host.

**Classification distillation** (weight 0.4, T = 2). Each positive anchor takes the teacher's logits of its
ground-truth box's crop (cut once per batch, no grad, at the teacher's input size) and is compared with the
student's class logits there: KL(softmax(t/T) ‖ p_s) · T², averaged over the positives of every head. YOLO's
classes are sigmoids, so p_s is DICOD's *normalised-sigmoid* distribution, p_s,c = σ(s_c/T) / Σ_c' σ(s_c'/T),
and not the per-class binary KL. Why: the teacher is a softmax classifier over mutually exclusive classes; its
softened outputs are one categorical distribution, which a categorical from the student matches. Read as C
independent binary targets instead, softmax(t/T) (top class ~0.5 at T = 2) would pull the student's sigmoid class
scores, which YOLO multiplies into its detection scores, away from the 1 the label loss asks for.
(σ(s/T) normalised over classes is softmax(log σ(s/T)): the KL is :func:`fastdiode.ops.kd_loss` on T·log σ(s/T)
with the positives as row weights.)

**Localization distillation** (weight 0.15). The student's box at each positive anchor (decoded as the YOLO loss
decodes it) and the ground-truth box are cropped from the input images with the same differentiable
:func:`fastdiode.ops.roi_crop`; the loss is the L1 between the two crops' 4×4-pooled pixels plus the L1 between
the 8×8-pooled features of the teacher's stem on the two crops, averaged per positive box. Gradients flow into
the predicted box (and through the frozen stem); the ground-truth crop is a constant.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastdiode.models.boxes import xywh_to_xyxy
from fastdiode.models.heads import YoloHead
from fastdiode.models.yolo_assign import assign_targets
from fastdiode.ops import kd_loss, roi_crop

__all__ = ["DICODClsLoss", "DICODLocLoss", "dicod_cls_loss", "dicod_loc_loss", "crop_logits"]


def _gt_boxes(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised xyxy boxes (B, K, 4), valid (B, K)) of padded targets (B, K, 5)."""
    return xywh_to_xyxy(targets[..., 1:5].float()), targets[..., 0] >= 0


@torch.no_grad()
def crop_logits(classifier: nn.Module, images: torch.Tensor, targets: torch.Tensor, size: int | None = None,
                backend: str | None = None) -> torch.Tensor:
    """The classifier's logits (B, K, C) of each target's crop, cut at ``size`` (default: the classifier's
    ``input_size``); padding rows see an all-zero crop (their logits are masked out by the losses)."""
    boxes, valid = _gt_boxes(targets)
    size = size or classifier.input_size
    crops = roi_crop(images.float(), boxes, size, valid=valid, backend=backend)
    b, k = crops.shape[:2]
    return classifier(crops.flatten(0, 1)).float().view(b, k, -1)


def dicod_cls_loss(preds: list[torch.Tensor], targets: torch.Tensor, heads: list[YoloHead],
                   teacher_logits: torch.Tensor, temperature: float = 2.0, iou_t: float = 0.225,
                   backend: str | None = None) -> torch.Tensor:
    """Classification distillation (module docstring) of raw head maps (B, A, H, W, 5 + C) against the teacher's
    crop logits (B, K, C) of padded targets (B, K, 5). 0-dim fp32; 0 when no target is matched."""
    if teacher_logits.shape[:2] != targets.shape[:2] or teacher_logits.shape[-1] != preds[0].shape[-1] - 5:
        raise ValueError(f"teacher_logits: expected (B, K, C) = {(*targets.shape[:2], preds[0].shape[-1] - 5)} "
                         f"(one row of class logits per target), got {tuple(teacher_logits.shape)}")
    student, teacher, weight = [], [], []
    for p, mt in zip(preds, assign_targets(preds, targets.float(), heads, iou_t)):
        s = mt.gather(p)[..., 5:].float()  # (B, K, A, C)
        student.append(s.flatten(0, 2))
        teacher.append(teacher_logits[:, :, None].expand_as(s).flatten(0, 2))
        weight.append(mt.match.flatten())
    t = temperature
    normalised = t * F.logsigmoid(torch.cat(student) / t)  # softmax of this / T = the normalised sigmoid
    return kd_loss(normalised, torch.cat(teacher), t, backend, weights=torch.cat(weight).float())


def _pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """Adaptive average pooling of (..., C, H, W) maps to size×size."""
    return F.adaptive_avg_pool2d(x.flatten(0, -4), size).view(*x.shape[:-2], size, size)


def dicod_loc_loss(preds: list[torch.Tensor], targets: torch.Tensor, heads: list[YoloHead], images: torch.Tensor,
                   stem: nn.Module, size: int, iou_t: float = 0.225, backend: str | None = None) -> torch.Tensor:
    """Localization distillation (module docstring) of raw head maps against padded targets (B, K, 5) on the
    student's input ``images`` (B, 3, H, W), with the teacher's frozen ``stem`` and crops of ``size`` px."""
    gt, valid = _gt_boxes(targets)
    images = images.float()
    b, k = gt.shape[:2]
    with torch.no_grad():
        gt_crops = roi_crop(images, gt, size, valid=valid, backend=backend)
        gt_feats = stem(gt_crops.flatten(0, 1)).float()
        gt_pixels = _pool(gt_crops, 4)[:, :, None]  # (B, K, 1, 3, 4, 4)
        gt_feats = _pool(gt_feats, 8).view(b, k, 1, -1, 8, 8)
    num = images.new_zeros(())
    den = images.new_zeros(())
    for p, mt in zip(preds, assign_targets(preds, targets.float(), heads, iou_t)):
        h, w = p.shape[2:4]
        a = p.shape[1]
        grid = mt.decode(p.float())  # grid units of this head -> normalised, by Python scalars (no host copy)
        box = torch.stack([grid[..., 0] / w, grid[..., 1] / h, grid[..., 2] / w, grid[..., 3] / h], -1)
        crops = roi_crop(images, xywh_to_xyxy(box).flatten(1, 2), size, valid=mt.match.flatten(1, 2),
                         backend=backend)  # (B, K·A, 3, S, S)
        feats = _pool(stem(crops.flatten(0, 1)).float(), 8).view(b, k, a, -1, 8, 8)
        pixels = _pool(crops, 4).view(b, k, a, -1, 4, 4)
        per_box = (pixels - gt_pixels).abs().mean((-3, -2, -1)) + (feats - gt_feats).abs().mean((-3, -2, -1))
        m = mt.match.float()
        num = num + (per_box * m).sum()
        den = den + m.sum()
    return num / den.clamp_min(1.0)


def _frozen(classifier: nn.Module) -> nn.Module:
    return classifier.eval().requires_grad_(False)


class _FrozenClassifierLoss(nn.Module):
    """A loss holding a frozen classifier: ``.train()`` on the loss (or on a module that holds it) leaves the
    classifier in eval mode, so its BatchNorm keeps its running statistics."""

    classifier: nn.Module

    def train(self, mode: bool = True) -> _FrozenClassifierLoss:
        super().train(mode)
        self.classifier.eval()
        return self


class DICODClsLoss(_FrozenClassifierLoss):
    """:func:`dicod_cls_loss` with its frozen classification teacher: ``loss(preds, targets, images, heads)``."""

    def __init__(self, classifier: nn.Module, temperature: float = 2.0, iou_t: float = 0.225,
                 backend: str | None = None):
        super().__init__()
        self.classifier, self.temperature, self.iou_t, self.backend = _frozen(classifier), temperature, iou_t, backend

    def forward(self, preds: list[torch.Tensor], targets: torch.Tensor, images: torch.Tensor,
                heads: list[YoloHead]) -> torch.Tensor:
        logits = crop_logits(self.classifier, images, targets, backend=self.backend)
        return dicod_cls_loss(preds, targets, heads, logits, self.temperature, self.iou_t, self.backend)


class DICODLocLoss(_FrozenClassifierLoss):
    """:func:`dicod_loc_loss` with its frozen classification teacher's stem: ``loss(preds, targets, images,
    heads)``; crops at the classifier's input size unless ``size`` is given."""

    def __init__(self, classifier: nn.Module, size: int | None = None, iou_t: float = 0.225,
                 backend: str | None = None):
        super().__init__()
        self.classifier = _frozen(classifier)
        self.size, self.iou_t, self.backend = size or classifier.input_size, iou_t, backend

    def forward(self, preds: list[torch.Tensor], targets: torch.Tensor, images: torch.Tensor,
                heads: list[YoloHead]) -> torch.Tensor:
        return dicod_loc_loss(preds, targets, heads, images, self.classifier.stem, self.size, self.iou_t,
                              self.backend)
