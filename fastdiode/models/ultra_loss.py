"""The YOLOv8/11 detection loss (ultralytics 8.4's ``v8DetectionLoss``, method.md §11) in fixed shapes.

ultralytics builds a (B, n_max, 5) target tensor per batch and indexes the assigner's candidates with
``nonzero`` (shapes that depend on the data; host syncs). Here the targets are fastdiode's padded (B, K, 5)
``cls, xc, yc, w, h`` (cls < 0: padding), every (image, target, anchor) triple is computed and masked, and the
losses are sums over all anchors weighted by the foreground mask: the same values and gradients (the tests check
them against a line-by-line re-statement of ultralytics' code, in float64), no host sync, and the loss compiles
with ``fullgraph=True``, so the inversion step can capture it in a CUDA graph.

* Task-aligned assigner (top-k 10, alpha 0.5, beta 6): for each target, the anchors whose point lies inside the
  box (a side under ``strides[1]`` pixels widened to it) are candidates; alignment = s^alpha * CIoU^beta (s the
  predicted probability of the target's class); the top k per target are positives; an anchor claimed by several
  targets keeps the one it overlaps most; target scores = alignment normalised per target to its best CIoU.
* Class loss: BCE against the target scores, summed, divided by max(sum of target scores, 1).
* Box loss: 1 - CIoU of the decoded box, and DFL (cross-entropy to the two bins around each target distance,
  interpolated), both weighted by the anchor's target score.
* Gains box 7.5, cls 0.5, dfl 1.5; the sum times the batch size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fastdiode.models.boxes import xywh_to_xyxy, xyxy_to_xywh
from fastdiode.models.ultra_decode import bbox2dist, dfl_distances, dist2bbox, flatten_maps, make_anchors
from fastdiode.ops.tensor_checks import upcast

GAINS = (7.5, 0.5, 1.5)  # box, cls, dfl
TOPK, ALPHA, BETA, EPS = 10, 0.5, 6.0, 1e-9


def ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of corner boxes (..., 4), broadcast, as ultralytics' ``bbox_iou(xywh=False, CIoU=True)``
    (its alpha without gradient). Returns (...)."""
    b1_x1, b1_y1, b1_x2, b1_y2 = box1.unbind(-1)
    b2_x1, b2_y1, b2_x2, b2_y2 = box2.unbind(-1)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    inter = (b1_x2.minimum(b2_x2) - b1_x1.maximum(b2_x1)).clamp(0) * \
        (b1_y2.minimum(b2_y2) - b1_y1.maximum(b2_y1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = b1_x2.maximum(b2_x2) - b1_x1.minimum(b2_x1)
    ch = b1_y2.maximum(b2_y2) - b1_y1.minimum(b2_y1)
    c2 = cw.pow(2) + ch.pow(2) + eps
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2).pow(2) + (b2_y1 + b2_y2 - b1_y1 - b1_y2).pow(2)) / 4
    v = 4 / math.pi**2 * ((w2 / h2).atan() - (w1 / h1).atan()).pow(2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - (rho2 / c2 + v * alpha)


def gt_tensors(targets: torch.Tensor, width: float, height: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(labels (B, K, 1), corner boxes (B, K, 4) in pixels with padding rows zero, valid (B, K, 1)) of padded
    targets, as ultralytics' ``preprocess`` lays them out."""
    valid = targets[..., :1] >= 0
    scale = targets.new_tensor([width, height, width, height])
    boxes = torch.where(valid, xywh_to_xyxy(targets[..., 1:5] * scale), torch.zeros_like(targets[..., 1:5]))
    return targets[..., :1].clamp(min=0), boxes, valid


@torch.no_grad()
def assign(pd_scores: torch.Tensor, pd_bboxes: torch.Tensor, anc_points: torch.Tensor, gt_labels: torch.Tensor,
           gt_bboxes: torch.Tensor, mask_gt: torch.Tensor, num_classes: int, stride_val: float,
           topk: int = TOPK) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The task-aligned assignment: (target boxes (B, A, 4) in pixels, target scores (B, A, C), foreground (B, A),
    positives (B, K, A): which target each anchor serves) for predicted probabilities (B, A, C), predicted corner
    boxes (B, A, 4) and anchor points (A, 2), both in pixels, and the targets of :func:`gt_tensors`."""
    b, k = gt_bboxes.shape[:2]
    mask_gt = mask_gt.to(pd_scores.dtype)  # (B, K, 1)
    # candidates: anchor points inside the (widened) box
    xywh = xyxy_to_xywh(gt_bboxes)
    small = (xywh[..., 2:] < stride_val) & (mask_gt > 0)
    xywh = torch.cat([xywh[..., :2], torch.where(small, torch.full_like(xywh[..., 2:], stride_val), xywh[..., 2:])],
                     -1)
    lt, rb = xywh_to_xyxy(xywh)[:, :, None].chunk(2, 3)  # (B, K, 1, 2)
    mask_in = ((anc_points - lt[..., 0:2]).amin(-1) > EPS) & ((rb - anc_points).amin(-1) > EPS)  # (B, K, A)
    mask_in = mask_in.to(pd_scores.dtype)
    metric_mask = (mask_in * mask_gt) > 0
    # alignment of every (target, anchor) pair: zero outside the candidates
    overlaps = ciou(gt_bboxes[:, :, None], pd_bboxes[:, None]).clamp(0)
    overlaps = torch.where(metric_mask, overlaps, torch.zeros_like(overlaps))
    labels = gt_labels.long().expand(-1, -1, pd_scores.shape[1])  # (B, K, A)
    bbox_scores = pd_scores.permute(0, 2, 1).gather(1, labels)  # the target class's probability, (B, K, A)
    align = torch.where(metric_mask, bbox_scores.pow(ALPHA) * overlaps.pow(BETA), torch.zeros_like(overlaps))
    # the top k of each target
    topk_idxs = torch.topk(align, min(topk, align.shape[-1]), dim=-1, largest=True).indices
    topk_idxs = topk_idxs.masked_fill(mask_gt.expand(-1, -1, topk_idxs.shape[-1]) == 0, 0)
    # int32 counts (ultralytics: int8, same values): Triton has no int8 atomic add for inductor's scatter
    count = torch.zeros(align.shape, dtype=torch.int32, device=align.device)
    count.scatter_add_(-1, topk_idxs, torch.ones_like(topk_idxs, dtype=torch.int32))
    count = count.masked_fill(count > 1, 0)
    mask_pos = count.to(mask_in.dtype) * mask_in * mask_gt
    # an anchor claimed by several targets keeps the one of highest overlap
    fg = mask_pos.sum(-2)
    multi = (fg[:, None] > 1).expand(-1, k, -1)
    is_max = torch.zeros_like(mask_pos).scatter_(1, overlaps.max(1).indices[:, None], 1)
    mask_pos = torch.where(multi, is_max, mask_pos)
    fg, target_gt_idx = mask_pos.max(-2)
    # targets of each anchor
    flat_idx = target_gt_idx + torch.arange(b, device=align.device)[:, None] * k
    target_labels = gt_labels.long().flatten()[flat_idx].clamp(0)
    target_bboxes = gt_bboxes.reshape(-1, 4)[flat_idx]
    target_scores = F.one_hot(target_labels, num_classes) * (fg[:, :, None] > 0)
    align = align * mask_pos
    pos_align = align.amax(-1, keepdim=True)
    pos_overlaps = (overlaps * mask_pos).amax(-1, keepdim=True)
    norm = (align * pos_overlaps / (pos_align + EPS)).amax(-2)[..., None]
    return target_bboxes, target_scores * norm, fg > 0, mask_pos > 0


@torch.no_grad()
def assign_maps(preds: list[torch.Tensor], targets: torch.Tensor, strides: list[float], reg_max: int = 16,
                topk: int = TOPK) -> tuple[torch.Tensor, torch.Tensor]:
    """(foreground (B, A), positives (B, K, A)) of the task-aligned assignment of padded targets (B, K, 5) to the
    anchors of head maps ``preds``, whose scores and boxes the alignment reads. Fixed shapes, no host sync."""
    pred_dist, pred_scores = flatten_maps([upcast(p) for p in preds], reg_max)
    shapes = [tuple(p.shape[2:]) for p in preds]
    points, stride = make_anchors(shapes, strides, pred_dist.device, pred_dist.dtype)
    gt_labels, gt_bboxes, mask_gt = gt_tensors(targets.to(pred_dist.dtype), shapes[0][1] * strides[0],
                                               shapes[0][0] * strides[0])
    boxes = dist2bbox(dfl_distances(pred_dist, reg_max), points) * stride
    _, _, fg, positives = assign(pred_scores.sigmoid(), boxes, points * stride, gt_labels, gt_bboxes, mask_gt,
                                 pred_scores.shape[-1], strides[1] if len(strides) > 1 else strides[0], topk)
    return fg, positives


def positive_cells(preds: list[torch.Tensor], targets: torch.Tensor, strides: list[float], reg_max: int = 16,
                   topk: int = TOPK) -> list[torch.Tensor]:
    """Per level, the (B, H, W) cells the assigner makes positive for the targets: the anchor-free counterpart of
    FGFI's anchor-overlap imitation mask."""
    fg, _ = assign_maps(preds, targets, strides, reg_max, topk)
    shapes = [tuple(p.shape[2:]) for p in preds]
    return [f.view(-1, h, w).float() for f, (h, w) in zip(fg.split([h * w for h, w in shapes], 1), shapes)]


def target_positives(preds: list[torch.Tensor], targets: torch.Tensor, strides: list[float], reg_max: int = 16,
                     topk: int = TOPK) -> tuple[torch.Tensor, torch.Tensor]:
    """(anchor index (B, K, topk), positive (B, K, topk)): each target's positive anchors (at most ``topk``;
    the rest masked), for losses that read the predictions a target is matched to (DICOD)."""
    _, positives = assign_maps(preds, targets, strides, reg_max, topk)
    ranked = positives.to(torch.float32).topk(min(topk, positives.shape[-1]), dim=-1)
    return ranked.indices, ranked.values > 0


def dfl_loss(pred_dist: torch.Tensor, target: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Distribution focal loss per anchor (B, A): the cross-entropy of each side's bin logits to the two bins
    around its target distance, weighted by closeness, averaged over the four sides."""
    target = target.clamp(0, reg_max - 1 - 0.01)
    left = target.long()
    w_left = left + 1 - target
    logp = F.log_softmax(pred_dist.unflatten(-1, (4, reg_max)), -1)
    at = lambda idx: logp.gather(-1, idx[..., None])[..., 0]  # noqa: E731
    return -(at(left) * w_left + at(left + 1) * (1 - w_left)).mean(-1)


def v8_loss(preds: list[torch.Tensor], targets: torch.Tensor, strides: list[float], reg_max: int = 16,
            topk: int = TOPK) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, detached [box, cls, dfl]) of raw head maps (B, 4 reg_max + nc, H, W) per level against padded
    targets (B, K, 5); the loss is their sum, each part already multiplied by its gain and the batch size."""
    pred_dist, pred_scores = flatten_maps(preds, reg_max)
    pred_dist, pred_scores = upcast(pred_dist), upcast(pred_scores)
    b, _, nc = pred_scores.shape
    shapes = [tuple(p.shape[2:]) for p in preds]
    points, stride = make_anchors(shapes, strides, pred_dist.device, pred_dist.dtype)
    height, width = shapes[0][0] * strides[0], shapes[0][1] * strides[0]
    gt_labels, gt_bboxes, mask_gt = gt_tensors(targets.to(pred_dist.dtype), width, height)
    pred_bboxes = dist2bbox(dfl_distances(pred_dist, reg_max), points)  # grid units of each anchor's level
    target_bboxes, target_scores, fg, _ = assign(
        pred_scores.detach().sigmoid(), pred_bboxes.detach() * stride, points * stride, gt_labels, gt_bboxes,
        mask_gt, nc, strides[1] if len(strides) > 1 else strides[0], topk)
    target_scores_sum = target_scores.sum().clamp(min=1)
    cls = F.binary_cross_entropy_with_logits(pred_scores, target_scores, reduction="none").sum() / target_scores_sum
    weight = target_scores.sum(-1) * fg
    target_bboxes = target_bboxes / stride
    # background anchors are compared with themselves: no term, and no NaN from a degenerate pair in backward
    safe_target = torch.where(fg[..., None], target_bboxes, pred_bboxes.detach())
    box = ((1.0 - ciou(pred_bboxes, safe_target)) * weight).sum() / target_scores_sum
    dfl = (dfl_loss(pred_dist, bbox2dist(points, target_bboxes, reg_max - 1 - 0.01), reg_max) * weight).sum() \
        / target_scores_sum
    parts = torch.stack([box * GAINS[0], cls * GAINS[1], dfl * GAINS[2]]) * b
    return parts.sum(), parts.detach()
