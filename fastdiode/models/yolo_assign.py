"""YOLOv3's target assignment (method.md §2.3), in fixed shapes: the one that ``yolo_loss`` and the DICOD
losses share.

At every head, each target box (class, centre, w, h, normalised) is matched to every anchor whose width/height
IoU with it (in grid units) exceeds ``iou_t``, at cell floor(centre * grid). Every (image, target, anchor)
triple is kept and masked, so no shape depends on the data and nothing syncs with the host."""
from __future__ import annotations

from typing import NamedTuple

import torch

from fastdiode.models.boxes import wh_iou
from fastdiode.models.heads import YoloHead


class HeadMatches(NamedTuple):
    """The candidate matches of one head, every field indexed (B, K, A) (image, target, anchor)."""

    match: torch.Tensor  # bool: the triple is a positive
    bi: torch.Tensor  # long: image index
    ai: torch.Tensor  # long: anchor index
    gj: torch.Tensor  # long: cell row
    gi: torch.Tensor  # long: cell column
    gxy: torch.Tensor  # (B, K, 2) target centre in grid units
    gwh: torch.Tensor  # (B, K, 2) target size in grid units
    anchors: torch.Tensor  # (A, 2) anchors in grid units

    def gather(self, pred: torch.Tensor) -> torch.Tensor:
        """The head map's prediction at each candidate: (B, A, H, W, D) -> (B, K, A, D)."""
        return pred[self.bi, self.ai, self.gj, self.gi]

    def decode(self, pred: torch.Tensor) -> torch.Tensor:
        """Each candidate's predicted box (B, K, A, 4), centre-size in grid units of this head, as yolo_loss
        scores it: xy = cell + sigmoid(t_xy), wh = exp(t_wh) * anchor (exp clamped at 1e3)."""
        ps = self.gather(pred)
        cell = torch.stack([self.gi, self.gj], -1).to(ps.dtype)
        return torch.cat([cell + ps[..., :2].sigmoid(), ps[..., 2:4].exp().clamp(max=1e3) * self.anchors], -1)


def assign_targets(preds: list[torch.Tensor], targets: torch.Tensor, heads: list[YoloHead],
                   iou_t: float = 0.225) -> list[HeadMatches]:
    """Per head, the matches of padded targets (B, K, 5) (class < 0 marks padding) to raw head maps
    (B, A, H, W, 5 + C)."""
    valid = targets[..., 0] >= 0
    out = []
    for p, head in zip(preds, heads):
        b, a, h, w, _ = p.shape
        k = targets.shape[1]
        anchors = (head.anchors / head.stride).to(p.device, targets.dtype)
        gxy = torch.stack([targets[..., 1] * w, targets[..., 2] * h], -1)  # Python scalars: no host copy
        gwh = torch.stack([targets[..., 3] * w, targets[..., 4] * h], -1)
        match = valid[..., None] & (wh_iou(gwh, anchors) > iou_t)
        cell = gxy.long()
        gi = cell[..., 0].clamp(0, w - 1)[..., None].expand(b, k, a)
        gj = cell[..., 1].clamp(0, h - 1)[..., None].expand(b, k, a)
        bi = torch.arange(b, device=p.device).view(b, 1, 1).expand(b, k, a)
        ai = torch.arange(a, device=p.device).view(1, 1, a).expand(b, k, a)
        out.append(HeadMatches(match, bi, ai, gj, gi, gxy, gwh, anchors))
    return out
