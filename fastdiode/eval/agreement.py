"""How well a detector's predictions agree with given targets: precision and recall at a confidence, and
AP@0.5 (all-point interpolated, mean over the classes present), for per-batch logs without pycocotools."""
from __future__ import annotations

import torch

from fastdiode.models.boxes import box_iou, xywh_to_xyxy


def _match(dets: list[torch.Tensor], targets: torch.Tensor, size: int, iou_thres: float):
    """(score, class, is_true_positive) of every detection, greedy by score, one match per target."""
    rows = []
    for det, tgt in zip(dets, targets):
        gt = tgt[tgt[:, 0] >= 0]
        gt_boxes = xywh_to_xyxy(gt[:, 1:5]) * size
        used = torch.zeros(len(gt), dtype=torch.bool)
        for x1, y1, x2, y2, score, cls in det.tolist():
            tp = False
            same = (gt[:, 0] == cls) & ~used
            if same.any():
                iou = box_iou(torch.tensor([[x1, y1, x2, y2]]), gt_boxes)[0].masked_fill(~same, -1)
                best = int(iou.argmax())
                if iou[best] >= iou_thres:
                    used[best] = tp = True
            rows.append((score, int(cls), tp))
    return rows


def agreement(dets: list[torch.Tensor], targets: torch.Tensor, size: int, conf: float = 0.25,
              iou_thres: float = 0.5) -> dict:
    """{'precision', 'recall' (at score >= conf), 'ap50'} of per-image detections (n, 6) in pixels against
    padded normalised targets (B, K, 5) on size x size images."""
    rows = _match([d.cpu().float() for d in dets], targets.cpu().float(), size, iou_thres)
    counts = {}
    for c in targets[..., 0][targets[..., 0] >= 0].long().tolist():
        counts[c] = counts.get(c, 0) + 1
    total = sum(counts.values())
    confident = [r for r in rows if r[0] >= conf]
    tp = sum(r[2] for r in confident)
    aps = []
    for c, n in counts.items():
        ranked = sorted((r for r in rows if r[1] == c), key=lambda r: -r[0])
        hits = torch.tensor([float(r[2]) for r in ranked])
        if len(hits) == 0:
            aps.append(0.0)
            continue
        cum = hits.cumsum(0)
        recall = torch.cat([torch.zeros(1), cum / n, torch.ones(1) * (cum[-1] / n)])
        precision = torch.cat([torch.ones(1), cum / torch.arange(1, len(hits) + 1), torch.zeros(1)])
        precision = torch.flip(torch.cummax(torch.flip(precision, [0]), 0).values, [0])
        aps.append(float(((recall[1:] - recall[:-1]) * precision[1:]).sum()))
    return {"precision": tp / len(confident) if confident else 0.0, "recall": tp / total if total else 0.0,
            "ap50": sum(aps) / len(aps) if aps else 0.0}
