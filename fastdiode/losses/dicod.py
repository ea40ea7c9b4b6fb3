"""DICOD's classifier-to-detector distillation (Guo, Alvarez and Salzmann, NeurIPS 2021; method.md §8) for
one-stage YOLO detectors: a classification teacher, trained on object crops, teaches the detector's positive
anchors their classes and their boxes.

Both losses read the positives from the detector loss's own target assignment, every candidate computed and
masked, so shapes never depend on the data and nothing syncs with the host: YOLOv3's
(:func:`fastdiode.models.yolo_assign.assign_targets`, every (image, target, anchor) triple at each head), or, for
an anchor-free YOLOv8/11 detector (``heads`` is then the detector, with ``strides`` and ``reg_max``), the
task-aligned assigner's (:func:`fastdiode.models.ultra_loss.target_positives`: each target's at most 10 positive
anchors).

**Classification distillation** (weight 0.4, T = 2). Each positive anchor takes the teacher's logits of its
ground-truth box's crop (cut once per batch, no grad, at the teacher's input size) and is compared with the
student's class logits there: KL(q_t ‖ p_s) · T², averaged over the positives of every head. YOLO's classes are
sigmoids, so p_s is the normalised sigmoid p_s,c = σ(s_c/T) / Σ_c' σ(s_c'/T), not the per-class binary KL.

The teacher's distribution q_t is where fastdiode differs from the authors' code, one setting away
(``teacher_target``): fastdiode's default, ``"softmax"``, is q_t = softmax(t/T), because the crop classifier is a
softmax model trained with cross-entropy over mutually exclusive classes, so its softened outputs are already one
categorical distribution. The authors' branch for sigmoid-class detectors, ``"normalized_sigmoid"``, normalises
the teacher's sigmoids the same way as the student's: q_t,c = σ(t_c/T) / Σ_c' σ(t_c'/T) (flatter: per positive
the two differ by up to a few nats). Either way the per-class binary KL is avoided: read as C independent binary
targets, softmax(t/T) (top class ~0.5 at T = 2) would pull the student's sigmoid class scores, which YOLO
multiplies into its detection scores, away from the 1 the label loss asks for. (σ(x/T) normalised over classes is
softmax(log σ(x/T)): the KL is :func:`fastdiode.ops.kd_loss` on T·log σ(·/T), with the positives as row weights.)

**Localization distillation** (weight 0.15). The student's box at each positive anchor (decoded as the YOLO loss
decodes it) and the ground-truth box are cropped from the input images with the same differentiable
:func:`fastdiode.ops.roi_crop`; the loss is the L1 between the two crops' 4×4-pooled pixels plus the L1 between
the 8×8-pooled features of the teacher's stem on the two crops, averaged per positive box. Gradients flow into
the predicted box (and through the frozen stem); the ground-truth crop is a constant. At the image border
fastdiode crops the box as it is, zeros outside the image (``clamp=False``: the crop keeps the box's shape and
scale, the same for the predicted and the ground-truth box); the authors clamp each box to the image first
(``clamp=True``, the same to 5e-15 on their test case).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastdiode.models.boxes import xywh_to_xyxy, xyxy_to_xywh
from fastdiode.models.ultra_decode import dfl_distances, dist2bbox, flatten_maps, make_anchors
from fastdiode.models.ultra_loss import target_positives
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


def _positives(preds: list[torch.Tensor], targets: torch.Tensor, heads, iou_t: float):
    """Per group of matches: (the student's class logits (B, K, M, C), its boxes there as normalised centre-size
    (B, K, M, 4), positive (B, K, M)), M candidates per target: the anchors of one YOLOv3 head, or the at most
    10 anchors the task-aligned assigner gives a target of an anchor-free detector."""
    if hasattr(heads, "reg_max"):
        index, match = target_positives(preds, targets, heads.strides, heads.reg_max)
        dist, scores = flatten_maps(preds, heads.reg_max)
        shapes = [p.shape[2:] for p in preds]
        points, stride = make_anchors(shapes, heads.strides, dist.device, torch.float32)
        boxes = dist2bbox(dfl_distances(dist.float(), heads.reg_max), points) * stride
        size = (shapes[0][1] * heads.strides[0], shapes[0][0] * heads.strides[0])
        boxes = boxes / boxes.new_tensor([size[0], size[1], size[0], size[1]])
        b, k, m = index.shape
        flat = index.view(b, k * m, 1)
        at = lambda x: x.gather(1, flat.expand(-1, -1, x.shape[-1])).view(b, k, m, -1)  # noqa: E731
        yield at(scores.float()), xyxy_to_xywh(at(boxes)), match
        return
    for p, mt in zip(preds, assign_targets(preds, targets.float(), heads, iou_t)):
        h, w = p.shape[2:4]
        grid = mt.decode(p.float())  # grid units of this head -> normalised, by Python scalars (no host copy)
        box = torch.stack([grid[..., 0] / w, grid[..., 1] / h, grid[..., 2] / w, grid[..., 3] / h], -1)
        yield mt.gather(p)[..., 5:].float(), box, mt.match


TEACHER_TARGETS = ("softmax", "normalized_sigmoid")


def dicod_cls_loss(preds: list[torch.Tensor], targets: torch.Tensor, heads, teacher_logits: torch.Tensor,
                   temperature: float = 2.0, iou_t: float = 0.225, backend: str | None = None,
                   teacher_target: str = "softmax") -> torch.Tensor:
    """Classification distillation (module docstring) of raw head maps against the teacher's crop logits
    (B, K, C) of padded targets (B, K, 5); ``heads``: the student's YOLO heads, or an anchor-free detector;
    ``teacher_target``: ``"softmax"`` or the authors' ``"normalized_sigmoid"``. 0-dim fp32; 0 when no target is
    matched."""
    if teacher_target not in TEACHER_TARGETS:
        raise ValueError(f"teacher_target={teacher_target!r}: expected one of {', '.join(TEACHER_TARGETS)}")
    classes = teacher_logits.shape[-1]
    if teacher_logits.shape[:2] != targets.shape[:2]:
        raise ValueError(f"teacher_logits: expected (B, K, C) = ({', '.join(map(str, targets.shape[:2]))}, C) (one row "
                         f"of class logits per target), got {tuple(teacher_logits.shape)}")
    student, teacher, weight = [], [], []
    for s, _, match in _positives(preds, targets, heads, iou_t):
        if s.shape[-1] != classes:
            raise ValueError(f"teacher_logits: expected (B, K, C) with C = {s.shape[-1]} (the detector's classes), "
                             f"got {tuple(teacher_logits.shape)}")
        student.append(s.flatten(0, 2))
        teacher.append(teacher_logits[:, :, None].expand_as(s).flatten(0, 2))
        weight.append(match.flatten())
    t = temperature
    normalised = t * F.logsigmoid(torch.cat(student) / t)  # softmax of this / T = the normalised sigmoid
    teacher = torch.cat(teacher)
    if teacher_target == "normalized_sigmoid":
        teacher = t * F.logsigmoid(teacher / t)
    return kd_loss(normalised, teacher, t, backend, weights=torch.cat(weight).float())


def _pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """Adaptive average pooling of (..., C, H, W) maps to size×size."""
    return F.adaptive_avg_pool2d(x.flatten(0, -4), size).view(*x.shape[:-2], size, size)


def dicod_loc_loss(preds: list[torch.Tensor], targets: torch.Tensor, heads, images: torch.Tensor,
                   stem: nn.Module, size: int, iou_t: float = 0.225, backend: str | None = None,
                   clamp: bool = False) -> torch.Tensor:
    """Localization distillation (module docstring) of raw head maps against padded targets (B, K, 5) on the
    student's input ``images`` (B, 3, H, W), with the teacher's frozen ``stem`` and crops of ``size`` px;
    ``heads``: the student's YOLO heads, or an anchor-free detector; ``clamp``: clamp every box to the image
    before cropping (the authors')."""
    gt, valid = _gt_boxes(targets)
    if clamp:
        gt = gt.clamp(0, 1)
    images = images.float()
    b, k = gt.shape[:2]
    with torch.no_grad():
        gt_crops = roi_crop(images, gt, size, valid=valid, backend=backend)
        gt_feats = stem(gt_crops.flatten(0, 1)).float()
        gt_pixels = _pool(gt_crops, 4)[:, :, None]  # (B, K, 1, 3, 4, 4)
        gt_feats = _pool(gt_feats, 8).view(b, k, 1, -1, 8, 8)
    num = images.new_zeros(())
    den = images.new_zeros(())
    for _, box, match in _positives(preds, targets, heads, iou_t):
        m = box.shape[2]
        corners = xywh_to_xyxy(box).flatten(1, 2)
        crops = roi_crop(images, corners.clamp(0, 1) if clamp else corners, size, valid=match.flatten(1, 2),
                         backend=backend)  # (B, K·M, 3, S, S)
        feats = _pool(stem(crops.flatten(0, 1)).float(), 8).view(b, k, m, -1, 8, 8)
        pixels = _pool(crops, 4).view(b, k, m, -1, 4, 4)
        per_box = (pixels - gt_pixels).abs().mean((-3, -2, -1)) + (feats - gt_feats).abs().mean((-3, -2, -1))
        match = match.float()
        num = num + (per_box * match).sum()
        den = den + match.sum()
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
                 backend: str | None = None, teacher_target: str = "softmax"):
        super().__init__()
        self.classifier, self.temperature, self.iou_t, self.backend = _frozen(classifier), temperature, iou_t, backend
        self.teacher_target = teacher_target

    def forward(self, preds: list[torch.Tensor], targets: torch.Tensor, images: torch.Tensor,
                heads) -> torch.Tensor:
        logits = crop_logits(self.classifier, images, targets, backend=self.backend)
        return dicod_cls_loss(preds, targets, heads, logits, self.temperature, self.iou_t, self.backend,
                              self.teacher_target)


class DICODLocLoss(_FrozenClassifierLoss):
    """:func:`dicod_loc_loss` with its frozen classification teacher's stem: ``loss(preds, targets, images,
    heads)``; crops at the classifier's input size unless ``size`` is given."""

    def __init__(self, classifier: nn.Module, size: int | None = None, iou_t: float = 0.225,
                 backend: str | None = None, clamp: bool = False):
        super().__init__()
        self.classifier = _frozen(classifier)
        self.size, self.iou_t, self.backend, self.clamp = size or classifier.input_size, iou_t, backend, clamp

    def forward(self, preds: list[torch.Tensor], targets: torch.Tensor, images: torch.Tensor,
                heads) -> torch.Tensor:
        return dicod_loc_loss(preds, targets, heads, images, self.classifier.stem, self.size, self.iou_t,
                              self.backend, self.clamp)
