"""Box geometry in plain torch (torchvision does not import with the CPU torch build)."""
from __future__ import annotations

import torch


def xywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre-size boxes to corner boxes."""
    xy, wh = b[..., :2], b[..., 2:4]
    return torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)


def xyxy_to_xywh(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) corner boxes to centre-size boxes."""
    return torch.cat([(b[..., :2] + b[..., 2:4]) / 2, b[..., 2:4] - b[..., :2]], dim=-1)


def target_rows(classes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Target rows (n, 5) ``cls, xc, yc, w, h`` of classes (n,) and normalised corner boxes (n, 4)."""
    return torch.cat([classes[:, None].to(boxes.dtype), xyxy_to_xywh(boxes)], 1)


PAD_ROW = (-1.0, 0.0, 0.0, 0.0, 0.0)  # a padding row of a (B, K, 5) target tensor


def empty_targets(batch: int, capacity: int, device=None) -> torch.Tensor:
    """(batch, capacity, 5) targets that are all padding."""
    return torch.tensor(PAD_ROW, device=device).repeat(batch, capacity, 1)


def detections_to_targets(detections: list[torch.Tensor], width: int, height: int, capacity: int) -> torch.Tensor:
    """Per-image detections (n, 6) ``x1, y1, x2, y2, score, class`` in pixels as padded (B, capacity, 5) targets,
    in the detections' order (best first), cut at ``capacity``; on the detections' device."""
    device = detections[0].device if detections else None
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=device)
    out = empty_targets(len(detections), capacity, device)
    for i, det in enumerate(detections):
        det = det[:capacity].float()
        out[i, : len(det)] = target_rows(det[:, 5], det[:, :4] / scale)
    return out


def box_area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU (N, M) of corner boxes a (N, 4) and b (M, 4)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    return inter / (box_area(a)[:, None] + box_area(b)[None] - inter).clamp_min(1e-12)


def generalized_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Elementwise GIoU of corner boxes a, b (..., 4): IoU - (hull - union) / hull."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    union = box_area(a) + box_area(b) - inter + eps
    hull = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).prod(-1) + eps
    return inter / union - (hull - union) / hull


def wh_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes sharing a centre, from widths/heights: wh1 (..., 2) against wh2 (A, 2) -> (..., A)."""
    inter = torch.minimum(wh1[..., None, :], wh2).prod(-1)
    return inter / (wh1.prod(-1)[..., None] + wh2.prod(-1) - inter).clamp_min(1e-12)
