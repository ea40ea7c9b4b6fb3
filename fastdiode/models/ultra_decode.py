"""From the YOLOv8/11 head's raw maps to boxes (method.md §11), as ultralytics 8.4 decodes them: anchor points at
cell centres (+0.5) times the stride; the box branch's 4 x reg_max logits per anchor are a softmax over bins whose
expectation is the distance (left, top, right, bottom) from the anchor point; class scores are sigmoids (no
objectness)."""
from __future__ import annotations

import torch

from fastdiode.models.postprocess import select_and_nms
from fastdiode.ops.tensor_checks import upcast


def make_anchors(shapes: list[tuple[int, int]], strides: list[float], device: torch.device, dtype: torch.dtype,
                 offset: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(anchor points (A, 2) x, y in grid units of their level, strides (A, 1)) over the levels' (h, w), row-major
    per level, levels in order: ultralytics' ``make_anchors``."""
    points, stride_tensor = [], []
    for (h, w), stride in zip(shapes, strides):
        sx = torch.arange(w, device=device, dtype=dtype) + offset
        sy = torch.arange(h, device=device, dtype=dtype) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_tensor.append(torch.full((h * w, 1), stride, device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_tensor)


def flatten_maps(preds: list[torch.Tensor], reg_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(box-bin logits (B, A, 4 reg_max), class logits (B, A, nc)) of the per-level maps (B, 4 reg_max + nc, H, W),
    the anchors of all levels in :func:`make_anchors`' order."""
    b, no = preds[0].shape[:2]
    flat = torch.cat([p.reshape(b, no, -1) for p in preds], 2)
    dist, scores = flat.split((4 * reg_max, no - 4 * reg_max), 1)
    return dist.permute(0, 2, 1), scores.permute(0, 2, 1)


def dfl_distances(dist: torch.Tensor, reg_max: int) -> torch.Tensor:
    """(..., 4 reg_max) bin logits -> (..., 4) expected distances in bins."""
    proj = torch.arange(reg_max, device=dist.device, dtype=dist.dtype)
    return dist.unflatten(-1, (4, reg_max)).softmax(-1).matmul(proj)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor) -> torch.Tensor:
    """Corner boxes (..., 4) from distances (l, t, r, b) around anchor points (..., 2)."""
    lt, rb = distance.chunk(2, -1)
    return torch.cat((anchor_points - lt, anchor_points + rb), -1)


def bbox2dist(anchor_points: torch.Tensor, bbox: torch.Tensor, limit: float) -> torch.Tensor:
    """Distances (l, t, r, b) from anchor points to corner boxes, clamped to [0, limit]."""
    x1y1, x2y2 = bbox.chunk(2, -1)
    return torch.cat((anchor_points - x1y1, x2y2 - anchor_points), -1).clamp(0, limit)


def decode(preds: list[torch.Tensor], strides: list[float], reg_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(corner boxes (B, A, 4) in input pixels, class probabilities (B, A, nc)) of every anchor."""
    dist, scores = flatten_maps([upcast(p) for p in preds], reg_max)
    points, stride = make_anchors([tuple(p.shape[2:]) for p in preds], strides, dist.device, dist.dtype)
    return dist2bbox(dfl_distances(dist, reg_max), points) * stride, scores.sigmoid()


def detect(preds: list[torch.Tensor], strides: list[float], reg_max: int, conf_thres: float = 0.001,
           iou_thres: float = 0.7, max_det: int = 300, multi_label: bool = False,
           min_wh: float = 0.0) -> list[torch.Tensor]:
    """Per image, (n, 6) ``x1, y1, x2, y2, score, class`` in input pixels after class-aware NMS, best first
    (ultralytics' ``non_max_suppression`` on the decoded output: the score is the class probability)."""
    boxes, scores = decode(preds, strides, reg_max)
    return select_and_nms(boxes, scores, conf_thres, iou_thres, max_det, multi_label, min_wh)
