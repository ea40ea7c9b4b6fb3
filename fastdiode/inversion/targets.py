"""What the synthesized images should contain (method.md §4), as padded (B, K, 5) ``cls, xc, yc, w, h``
targets (normalised; rows with cls < 0 are padding): one box per image, boxes from an existing label set,
and Y_fp false-positive sampling from the teacher's own confident predictions."""
from __future__ import annotations

from pathlib import Path

import torch

from fastdiode.data.dataset import DetectionDataset
from fastdiode.inversion.config import FalsePositiveConfig
from fastdiode.models.boxes import PAD_ROW, box_iou, empty_targets, target_rows, xywh_to_xyxy, xyxy_to_xywh
from fastdiode.models.detector import Detector


def one_box_targets(batch: int, num_classes: int, capacity: int, generator: torch.Generator | None = None,
                    min_size: float = 0.2, max_size: float = 0.8, device=None) -> torch.Tensor:
    """DIODE's default: one box per image, w, h ~ U[min_size, max_size], centre uniform with the box inside the
    image, class uniform; drawn on ``device`` (the generator's by default)."""
    device = generator.device if device is None and generator is not None else device
    u = torch.rand(batch, 4, generator=generator, device=device)
    wh = min_size + (max_size - min_size) * u[:, :2]
    xy = wh / 2 + (1 - wh) * u[:, 2:]
    cls = torch.randint(0, num_classes, (batch, 1), generator=generator, device=device).float()
    targets = empty_targets(batch, capacity, device)
    targets[:, 0] = torch.cat([cls, xy, wh], 1)
    return targets


class LabelTargets:
    """Targets read from an existing label set (COCO json or YOLO labels folder + its images), in order:
    job batch ``b`` takes images ``b * B ... b * B + B - 1`` (cycling). Boxes keep their normalised
    coordinates on the square canvas."""

    def __init__(self, images: str | Path, labels: str | Path, capacity: int, num_classes: int):
        dataset = DetectionDataset(images, labels, capacity=capacity, num_classes=num_classes)
        self.capacity = capacity
        # read (and check: classes below num_classes, boxes in the image) every label once, before any step
        self.boxes = [dataset.boxes(index) for index in range(len(dataset))]

    def batch(self, batch_id: int, batch_size: int, device=None) -> torch.Tensor:
        targets = empty_targets(batch_size, self.capacity)
        for i in range(batch_size):
            boxes = self.boxes[(batch_id * batch_size + i) % len(self.boxes)][: self.capacity]
            targets[i, : len(boxes)] = boxes
        return targets.to(device)


def check_classes(targets: torch.Tensor, num_classes: int, where: str) -> None:
    """Reject a target class >= ``num_classes`` (the loss would see an all-zero class target). Reads the
    classes on the host: call it where targets enter, never inside a step."""
    cls = targets[..., 0]
    bad = (cls >= num_classes).nonzero()
    if len(bad):
        index = tuple(bad[0].tolist())
        raise ValueError(f"{where}: target {index} has class {int(cls[index])}, but the teacher has {num_classes} "
                         f"classes (0..{num_classes - 1})")


def clip_to_image(targets: torch.Tensor) -> torch.Tensor:
    """Targets (..., 5) with every box clipped to the image; boxes left without area become padding. Written
    labels must lie in the image, also where Y_fp kept the authors' clamp-at-0 boxes (``fp.clip: zero``)."""
    xy = xywh_to_xyxy(targets[..., 1:5]).clamp(0, 1)
    keep = (targets[..., 0] >= 0) & (xy[..., 2:] > xy[..., :2]).all(-1)
    clipped = torch.cat([targets[..., :1], xyxy_to_xywh(xy)], -1)
    return torch.where(keep[..., None], clipped, torch.tensor(PAD_ROW, device=targets.device))


# The teacher's detections per image kept for Y_fp before filtering (the capacity applies after the filters).
FP_CANDIDATES = 300


@torch.no_grad()
def sample_false_positives(teacher: Detector, images: torch.Tensor, targets: torch.Tensor,
                           fp: FalsePositiveConfig | None = None,
                           autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Y_fp: the teacher's confident predictions on the un-augmented images that overlap no current target
    (max IoU < ``fp.iou``) and cover (``fp.min_area``, ``fp.max_area``) of the image, appended into free target
    rows, best first: the filters run on every detection, then the best that fit the free rows are kept.

    ``fp`` (default: :class:`FalsePositiveConfig`'s values) also says: ``multi_label`` keeps every class above
    ``conf`` (one box can enter once per class, as the authors' code); ``clip`` "image" clips boxes to the image
    and measures the area of the clipped box, "zero" clamps at 0 only and measures the unclipped box (the
    authors'); boxes with a side <= ``min_side`` pixels are dropped before NMS (the authors: 2). Runs outside the
    compiled step (NMS needs the host)."""
    fp = fp or FalsePositiveConfig()
    if fp.clip not in ("image", "zero"):
        raise ValueError(f"fp.clip: {fp.clip!r}: expected 'image' or 'zero'")
    b, _, h, w = images.shape
    with torch.autocast(images.device.type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
        preds = teacher(images)
    detections = teacher.detect(preds, fp.conf, fp.nms_iou, FP_CANDIDATES, fp.multi_label, fp.min_side)
    out = targets.clone()
    scale = torch.tensor([w, h, w, h], device=images.device, dtype=torch.float32)
    for i, det in enumerate(detections):
        valid = out[i, :, 0] >= 0
        free = (~valid).nonzero().flatten()
        if not len(free) or det.numel() == 0:
            continue
        raw = det[:, :4].float() / scale
        boxes = raw.clamp(0, 1) if fp.clip == "image" else raw.clamp(min=0)
        measured = boxes if fp.clip == "image" else raw
        area = (measured[:, 2] - measured[:, 0]) * (measured[:, 3] - measured[:, 1])
        keep = (area > fp.min_area) & (area < fp.max_area)
        if valid.any():
            keep &= box_iou(boxes, xywh_to_xyxy(out[i, valid, 1:5].float())).max(1).values < fp.iou
        rows = target_rows(det[keep, 5].float(), boxes[keep])[: len(free)]
        out[i, free[: len(rows)]] = rows.to(out.dtype)
    return out
