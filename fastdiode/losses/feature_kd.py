"""Feature and logit distillation for detectors (method.md §8): ReviewKD, FitNet, FGFI and KD as drop-in losses.

Adapters (ABF, ConvReg, the FGFI adapter) are training-only modules kept apart from the student, so a student
checkpoint is the same with or without them; each takes its channel counts from the student's and the teacher's
features (``from_features``), which may differ.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastdiode.models.boxes import box_iou, xywh_to_xyxy
from fastdiode.ops.hcl import hcl_loss
from fastdiode.ops.kd import dense_kd_loss, kd_loss

__all__ = ["ABF", "ConvReg", "DenseKDLoss", "FGFILoss", "FitNetLoss", "KDLoss", "ReviewKDLoss",
           "anchor_free_kd_maps", "fgfi_mask"]


def _channels(features: list[torch.Tensor]) -> list[int]:
    return [f.shape[1] for f in features]


class ABF(nn.Module):
    """ReviewKD's attention-based fusion: a 1x1 conv + BN brings a student level to ``mid`` channels; with
    ``fuse``, it is blended with the fused deeper level (nearest-upsampled to this level's own h x w, so
    non-square maps work) by two per-pixel sigmoid attention maps from a 1x1 conv on their concatenation; a 3x3
    conv + BN gives the level's output in the teacher's channels. Returns (output, residual for the next level)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)  # as ReviewKD
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            z = self.att_conv(torch.cat([x, residual], 1))
            x = x * z[:, :1] + residual * z[:, 1:]
        return self.conv2(x), x


class ReviewKDLoss(nn.Module):
    """ReviewKD (Chen et al., CVPR 2021): the student's levels, deepest first, pass through the ABF stack (each
    fused with the deeper ones' residual), and the HCL compares every result with the teacher's level.

    ``forward(student_feats, teacher_feats)`` takes the levels in any one order (shallow to deep, as
    ``feature_points()['neck']`` lists YOLO heads deep to shallow: the order only has to match); the first level
    of the list is the "deepest" one the review starts from. ``mid_channels`` defaults to the teacher's smallest
    channel count (ReviewKD uses 256 on FPN detectors)."""

    def __init__(self, student_channels: list[int], teacher_channels: list[int], mid_channels: int | None = None,
                 backend: str | None = None):
        super().__init__()
        if len(student_channels) != len(teacher_channels) or not student_channels:
            raise ValueError(f"review: {len(student_channels)} student levels vs {len(teacher_channels)} teacher "
                             "levels; expected the same number (>= 1)")
        mid = mid_channels or min(teacher_channels)
        self.abfs = nn.ModuleList(ABF(s, mid, t, fuse=i > 0)
                                  for i, (s, t) in enumerate(zip(student_channels, teacher_channels)))
        self.backend = backend

    @classmethod
    def from_features(cls, student: list[torch.Tensor], teacher: list[torch.Tensor], **kwargs) -> ReviewKDLoss:
        return cls(_channels(student), _channels(teacher), **kwargs)

    def adapt(self, student: list[torch.Tensor]) -> list[torch.Tensor]:
        """The student's levels after review, in the order given."""
        out, residual = [], None
        for abf, x in zip(self.abfs, student):
            y, residual = abf(x, residual)
            out.append(y)
        return out

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        adapted = self.adapt(student)
        for i, (a, t) in enumerate(zip(adapted, teacher)):
            if a.shape[-2:] != t.shape[-2:]:
                raise ValueError(f"review: level {i}: student map {tuple(a.shape[-2:])} vs teacher "
                                 f"{tuple(t.shape[-2:])}: the levels must have the teacher's sizes")
        return hcl_loss(adapted, [t.detach() for t in teacher], self.backend)


class ConvReg(nn.Module):
    """FitNet's regressor, stride-aware as in RepDistiller: a 3x3 stride-2 conv when the student map is twice the
    teacher's, a stride-2 transposed conv when it is half, a valid conv shrinking it otherwise; then BN + ReLU."""

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]):
        super().__init__()
        (_, s_c, s_h, s_w), (_, t_c, t_h, t_w) = student_shape, teacher_shape
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, 3, 2, 1)
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, 4, 2, 1)
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, (1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise ValueError(f"fitnet: student map {s_h}x{s_w} cannot be regressed onto the teacher's {t_h}x{t_w}")
        self.bn = nn.BatchNorm2d(t_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class FitNetLoss(nn.Module):
    """FitNet (Romero et al.): MSE between ConvReg(student feature) and the teacher's feature."""

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]):
        super().__init__()
        self.reg = ConvReg(student_shape, teacher_shape)

    @classmethod
    def from_features(cls, student: torch.Tensor, teacher: torch.Tensor) -> FitNetLoss:
        return cls(tuple(student.shape), tuple(teacher.shape))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.reg(student).float(), teacher.detach().float())


def fgfi_mask(targets: torch.Tensor, anchors: torch.Tensor, stride: float, height: int, width: int,
              psi: float = 0.5) -> torch.Tensor:
    """FGFI's imitation mask (Wang et al., CVPR 2019) of one level, batched over images: (B, H, W) with 1 where
    some anchor at that cell overlaps some ground-truth box with IoU > psi x that box's best IoU over this level's
    anchors (union over boxes). ``targets`` are padded (B, K, 5) ``cls, xc, yc, w, h`` normalised to the image
    (height·stride x width·stride px); ``anchors`` (A, 2) in pixels. Fixed shapes, no host sync."""
    b, k = targets.shape[:2]
    device = targets.device
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([cx, cy], -1)[:, :, None, :].expand(height, width, len(anchors), 2)
    anchor_boxes = xywh_to_xyxy(torch.cat([centres, anchors.to(device).float().expand_as(centres)], -1))  # (H,W,A,4)
    size = torch.tensor([width * stride, height * stride] * 2, device=device, dtype=torch.float32)
    gt = xywh_to_xyxy(targets[..., 1:5].float()) * size  # (B, K, 4) px
    iou = box_iou(anchor_boxes.reshape(-1, 4), gt.reshape(-1, 4)).view(height, width, len(anchors), b, k)
    valid = targets[..., 0] >= 0  # (B, K)
    best = iou.amax(dim=(0, 1, 2))  # (B, K)
    hit = (iou > psi * best) & valid & (best > 0)  # (H, W, A, B, K)
    return hit.any(-1).any(2).permute(2, 0, 1).float()  # (B, H, W)


class FGFILoss(nn.Module):
    """FGFI: a 3x3 conv + ReLU adapter per level, then the squared error inside the imitation masks, summed
    over channels and levels and divided by 2·N_p (N_p the masked cells of every level; at least 1). Levels are
    the features that feed the detection heads, with the heads' anchors and strides."""

    def __init__(self, student_channels: list[int], teacher_channels: list[int], psi: float = 0.5):
        super().__init__()
        self.adapters = nn.ModuleList(nn.Sequential(nn.Conv2d(s, t, 3, padding=1), nn.ReLU())
                                      for s, t in zip(student_channels, teacher_channels))
        self.psi = psi

    @classmethod
    def from_features(cls, student: list[torch.Tensor], teacher: list[torch.Tensor], **kwargs) -> FGFILoss:
        return cls(_channels(student), _channels(teacher), **kwargs)

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor], targets: torch.Tensor,
                anchors: list[torch.Tensor] | None, strides: list[float],
                masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``masks`` (B, H, W) per level replace the anchor masks (``anchors`` None): for anchor-free heads, the
        assigner's positive cells (:func:`fastdiode.models.ultra_loss.positive_cells`)."""
        total, cells = 0.0, 0.0
        for i, (adapter, s, t, stride) in enumerate(zip(self.adapters, student, teacher, strides)):
            mask = (masks[i] if masks is not None else
                    fgfi_mask(targets, anchors[i], stride, t.shape[2], t.shape[3], self.psi))[:, None]
            total = total + ((adapter(s).float() - t.detach().float()) ** 2 * mask).sum()
            cells = cells + mask.sum()
        return total / (2 * cells.clamp_min(1.0))


def anchor_free_kd_maps(maps: list[torch.Tensor], reg_max: int, teacher: bool) -> list[torch.Tensor]:
    """YOLOv8/11 head maps (B, 4 reg_max + C, H, W) in dense KD's layout (B, 1, H, W, 5 + C): the class logits,
    and, in the objectness slot of the teacher's, its largest class logit.

    Why: an anchor-free head has no objectness. Dense KD weights each cell by how sure the teacher is that an
    object is there, so that the ~99% background cells, whose class logits the detector loss never trained, do not
    swamp the loss. On these heads that certainty is the teacher's largest class probability (ultralytics' own
    detection score), and sigmoid(max_c t_c) = max_c sigmoid(t_c), so the largest logit is the objectness logit."""
    out = []
    for m in maps:
        cls = m[:, 4 * reg_max:].permute(0, 2, 3, 1)[:, None]  # (B, 1, H, W, C)
        obj = cls.amax(-1, keepdim=True) if teacher else torch.zeros_like(cls[..., :1])
        out.append(torch.cat([torch.zeros_like(cls[..., :1]).expand(*cls.shape[:-1], 4), obj, cls], -1))
    return out


class DenseKDLoss(nn.Module):
    """:func:`fastdiode.ops.dense_kd_loss` as a module: KD between head maps of one layout (the teacher's maps
    carry no gradient). ``reg_max`` set: YOLOv8/11 maps, weighted by the teacher's largest class probability
    (:func:`anchor_free_kd_maps`)."""

    def __init__(self, temperature: float = 1.0, backend: str | None = None, reg_max: int | None = None):
        super().__init__()
        self.temperature, self.backend, self.reg_max = temperature, backend, reg_max

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        teacher = [t.detach() for t in teacher]
        if self.reg_max is not None:
            student = anchor_free_kd_maps(student, self.reg_max, teacher=False)
            teacher = anchor_free_kd_maps(teacher, self.reg_max, teacher=True)
        return dense_kd_loss(student, teacher, self.temperature, self.backend)


class KDLoss(nn.Module):
    """:func:`fastdiode.ops.kd_loss` as a module: Hinton's KD for classifier heads."""

    def __init__(self, temperature: float = 4.0, backend: str | None = None):
        super().__init__()
        self.temperature, self.backend = temperature, backend

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return kd_loss(student, teacher, self.temperature, self.backend)
