"""From raw head maps to detections: decoding (anchors, grid, strides) and class-aware greedy NMS."""
from __future__ import annotations

import numpy as np
import torch

from fastdiode.models.boxes import box_iou, xywh_to_xyxy
from fastdiode.models.heads import HasYoloHeads


def decode(preds: list[torch.Tensor], model: HasYoloHeads) -> torch.Tensor:
    """(B, N, 5 + C): corner boxes in input pixels, objectness and class probabilities, for all anchors/cells.

    xy = (sigmoid(t_xy) + cell) * stride, wh = exp(t_wh) * anchor (exp clamped at 1e3)."""
    out = []
    for p, head in zip(preds, model.heads):
        b, a, h, w, d = p.shape
        p = p.float()
        gy, gx = torch.meshgrid(torch.arange(h, device=p.device), torch.arange(w, device=p.device), indexing="ij")
        grid = torch.stack([gx, gy], -1).view(1, 1, h, w, 2)
        xy = (p[..., :2].sigmoid() + grid) * head.stride
        wh = p[..., 2:4].exp().clamp(max=1e3) * head.anchors.view(1, a, 1, 1, 2).to(p.device)
        out.append(torch.cat([xywh_to_xyxy(torch.cat([xy, wh], -1)), p[..., 4:].sigmoid()], -1).view(b, -1, d))
    return torch.cat(out, 1)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float) -> torch.Tensor:
    """Indices of the boxes greedy NMS keeps, by decreasing score: a box is dropped when its IoU with a kept,
    higher-scoring box exceeds ``iou_thres``."""
    order = scores.argsort(descending=True)
    if order.numel() == 0:
        return order
    overlap = (box_iou(boxes[order], boxes[order]) > iou_thres).cpu().numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlap[i]  # one vectorised row per kept box
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_thres: float) -> torch.Tensor:
    """Class-aware NMS: boxes of different classes never suppress each other (offset per class)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offset = classes.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou_thres)


def select_and_nms(boxes: torch.Tensor, scores: torch.Tensor, conf_thres: float, iou_thres: float, max_det: int,
                   multi_label: bool = False, min_wh: float = 0.0, max_candidates: int = 3000) -> list[torch.Tensor]:
    """Per image, (n, 6) ``x1, y1, x2, y2, score, class`` from corner boxes (B, N, 4) and per-class scores
    (B, N, C): boxes with a side <= ``min_wh`` pixels dropped, every class above ``conf_thres`` (``multi_label``,
    the COCO-eval setting) or each box's best class, at most ``max_candidates`` best into class-aware NMS (that
    bounds the O(n^2) plain-torch NMS when a weak model puts every box above ``conf_thres``), ``max_det`` kept."""
    results = []
    for box, score_all in zip(boxes, scores):
        if min_wh > 0:
            keep = ((box[:, 2:4] - box[:, :2]) > min_wh).all(1)
            box, score_all = box[keep], score_all[keep]
        if multi_label:
            box_i, cls = (score_all > conf_thres).nonzero(as_tuple=True)
            score = score_all[box_i, cls]
        else:
            score, cls = score_all.max(1)
            box_i = (score > conf_thres).nonzero(as_tuple=True)[0]
            score, cls = score[box_i], cls[box_i]
        if score.numel() > max_candidates:
            top = score.topk(max_candidates).indices
            box_i, cls, score = box_i[top], cls[top], score[top]
        kept_boxes = box[box_i]
        keep = batched_nms(kept_boxes, score, cls, iou_thres)[:max_det]
        results.append(torch.cat([kept_boxes[keep], score[keep, None], cls[keep, None].to(box.dtype)], 1))
    return results


def postprocess(
    preds: list[torch.Tensor] | torch.Tensor,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    model: HasYoloHeads | None = None,
    multi_label: bool = False,
    max_candidates: int = 3000,
    min_wh: float = 0.0,
) -> list[torch.Tensor]:
    """Per image, a (n, 6) tensor ``x1, y1, x2, y2, score, class`` (pixels), best first.

    ``preds`` is either the raw head maps (then ``model`` supplies anchors and strides) or :func:`decode`'s
    output. Score = objectness x class probability; the rest is :func:`select_and_nms`."""
    if isinstance(preds, (list, tuple)):
        if model is None:
            raise ValueError("postprocess: raw head maps need model= for their anchors and strides")
        preds = decode(list(preds), model)
    return select_and_nms(preds[..., :4], preds[..., 4:5] * preds[..., 5:], conf_thres, iou_thres, max_det,
                          multi_label, min_wh, max_candidates)
