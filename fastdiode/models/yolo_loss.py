"""YOLOv3 detection loss as in the reference code (method.md §2.3), in fixed shapes.

Targets are matched to anchors and cells by :func:`fastdiode.models.yolo_assign.assign_targets` (the one
assignment, shared with the DICOD losses). Predicted boxes: p_xy = sigmoid(t_xy), p_wh = exp(t_wh) * anchor
(exp clamped at 1e3).

    L_box = sum_s mean over matches (1 - GIoU)
    L_obj = sum_s BCE-with-logits mean over all cells (1 at matched cells, 0 elsewhere)
    L_cls = sum_s BCE-with-logits mean over matches x classes (one-hot); 0 for a one-class model, whose
            objectness already says everything (the authors' code skips it too)
    L_det = 3.54 L_box + 64.3 L_obj + 37.4 L_cls

Every (image, target, anchor) triple is evaluated and masked, so shapes never depend on the data: no
boolean indexing, no host sync — the loss runs inside torch.compile(fullgraph=True) and a CUDA graph.
It is the task loss of fastdiode's YOLO detectors (``Darknet.task_loss``); users import it from
``fastdiode.losses``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastdiode.models.boxes import generalized_iou, xywh_to_xyxy
from fastdiode.models.heads import HasYoloHeads
from fastdiode.models.yolo_assign import HeadMatches, assign_targets
from fastdiode.ops.tensor_checks import upcast

__all__ = ["yolo_loss"]

WEIGHTS = (3.54, 64.3, 37.4)


def _check(preds: list[torch.Tensor], targets: torch.Tensor, model: HasYoloHeads) -> None:
    if len(preds) != len(model.heads):
        raise ValueError(f"preds: {len(preds)} head maps, but the model has {len(model.heads)} YOLO layers")
    if targets.dim() != 3 or targets.shape[-1] != 5:
        raise ValueError(f"targets: expected a padded (B, K, 5) tensor cls, xc, yc, w, h; got {tuple(targets.shape)}")
    for p, head in zip(preds, model.heads):
        if p.dim() != 5 or p.shape[0] != targets.shape[0] or p.shape[1] != len(head.anchors) \
                or p.shape[-1] != 5 + head.num_classes:
            raise ValueError(f"preds: head map of shape {tuple(p.shape)} does not match a batch of "
                             f"{targets.shape[0]} with {len(head.anchors)} anchors and {head.num_classes} classes")


def _objectness_target(obj: torch.Tensor, mt: HeadMatches, m: torch.Tensor) -> torch.Tensor:
    """1 at every cell with a match, 0 elsewhere, shaped as ``obj`` (B, A, H, W). A scatter-add over flat cell
    indices, then clamp: the eager ``index_put(accumulate=True)`` sorts its indices and cannot be captured in a
    CUDA graph (pytorch#105439), a scatter-add is plain atomics."""
    _, a, h, w = obj.shape
    cell = ((mt.bi * a + mt.ai) * h + mt.gj) * w + mt.gi
    hits = torch.zeros(obj.numel(), device=obj.device, dtype=obj.dtype).scatter_add_(0, cell.reshape(-1),
                                                                                       m.reshape(-1))
    return hits.view_as(obj).clamp(max=1.0)


def yolo_loss(
    preds: list[torch.Tensor],
    targets: torch.Tensor,
    model: HasYoloHeads,
    iou_t: float = 0.225,
    weights: tuple[float, float, float] = WEIGHTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_det, stacked detached (L_box, L_obj, L_cls)) of raw head maps against padded targets (B, K, 5)."""
    _check(preds, targets, model)
    dtype = upcast(preds[0]).dtype
    targets = targets.to(dtype)
    zero = preds[0].new_zeros((), dtype=dtype)
    l_box, l_obj, l_cls = zero, zero, zero
    for p, head, mt in zip(preds, model.heads, assign_targets(preds, targets, model.heads, iou_t)):
        p = upcast(p)
        ps = mt.gather(p)  # (B, K, A, 5 + C): the prediction at each candidate match
        tbox = torch.cat([mt.gxy, mt.gwh], -1)[:, :, None]  # grid units, as the decoded predictions
        giou = generalized_iou(xywh_to_xyxy(mt.decode(p)), xywh_to_xyxy(tbox))
        m = mt.match.to(dtype)
        n = m.sum().clamp_min(1.0)
        l_box = l_box + ((1.0 - giou) * m).sum() / n
        l_obj = l_obj + F.binary_cross_entropy_with_logits(p[..., 4], _objectness_target(p[..., 4], mt, m))
        if head.num_classes > 1:
            classes = torch.arange(head.num_classes, device=p.device)
            tcls = (targets[..., 0, None].long() == classes).to(dtype)[:, :, None].expand_as(ps[..., 5:])
            bce = F.binary_cross_entropy_with_logits(ps[..., 5:], tcls, reduction="none").mean(-1)
            l_cls = l_cls + (bce * m).sum() / n
    total = weights[0] * l_box + weights[1] * l_obj + weights[2] * l_cls
    return total, torch.stack([l_box, l_obj, l_cls]).detach()
