"""Faithful re-statements of the authors' code (NVlabs/DIODE, DeepInversion, DFQ-Dojo) for same-run baselines.

These are written the way the reference writes them — per-layer forward hooks with a permute().contiguous()
variance and torch.norm, TV by slicing, torch.roll/torch.flip driven by Python's `random`, a random-erase
mask built on the CPU and copied to the device — not slowed down on purpose.
"""
from __future__ import annotations

import random

import torch
from torch import nn


def bn_feature_loss(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor) -> torch.Tensor:
    """DeepInversionFeatureHook's r_feature for one BN input."""
    nch = x.shape[1]
    mean = x.mean([0, 2, 3])
    var = x.permute(1, 0, 2, 3).contiguous().view([nch, -1]).var(1, unbiased=False)
    return torch.norm(running_var.data - var, 2) + torch.norm(running_mean.data - mean, 2)


class BNFeatureHooks:
    """The reference's hook objects: one forward hook per BatchNorm2d, storing r_feature."""

    def __init__(self, model: nn.Module):
        self.values: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]

    def _hook(self, module, inputs, output):
        self.values.append(bn_feature_loss(inputs[0], module.running_mean, module.running_var))

    def loss(self, first_bn_multiplier: float = 1.0) -> torch.Tensor:
        values, self.values = self.values, []
        return first_bn_multiplier * values[0] + sum(values[1:])

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def image_prior_losses(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """get_image_prior_losses: TV by slicing, L1 as mean |d| and L2 as torch.norm per direction."""
    diff1 = x[:, :, :, :-1] - x[:, :, :, 1:]
    diff2 = x[:, :, :-1, :] - x[:, :, 1:, :]
    diff3 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
    diff4 = x[:, :, :-1, :-1] - x[:, :, 1:, 1:]
    loss_var_l2 = torch.norm(diff1) + torch.norm(diff2) + torch.norm(diff3) + torch.norm(diff4)
    loss_var_l1 = diff1.abs().mean() + diff2.abs().mean() + diff3.abs().mean() + diff4.abs().mean()
    return loss_var_l1, loss_var_l2


def random_erase_mask(batch: int, height: int, width: int, p: float = 0.5,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """A (B, 1, H, W) keep-mask as the reference builds it, image by image in Python; on the CPU as the reference
    does (``device`` puts it on the GPU instead: no host-to-device copy, for a fair GPU baseline)."""
    mask = torch.ones(batch, 1, height, width, device=device)
    for i in range(batch):
        if random.random() < p:
            area = random.uniform(0.02, 0.2) * height * width
            ratio = random.uniform(0.3, 3.3)
            eh = min(int(round((area * ratio) ** 0.5)), height)
            ew = min(int(round((area / ratio) ** 0.5)), width)
            y0 = random.randint(0, height - eh)
            x0 = random.randint(0, width - ew)
            mask[i, :, y0:y0 + eh, x0:x0 + ew] = 0
    return mask


def augment(x: torch.Tensor, jitter: int, mask_on_device: bool = False) -> torch.Tensor:
    """The reference's per-step augmentation: roll, flip, brightness, contrast, random erasing (the erase mask built
    on the CPU and copied over, or with ``mask_on_device`` built where x is)."""
    off1, off2 = random.randint(-jitter, jitter), random.randint(-jitter, jitter)
    x = torch.roll(x, shifts=(off1, off2), dims=(2, 3))
    if random.random() < 0.5:
        x = torch.flip(x, dims=(3,))
    b = x.shape[0]
    x = x + 0.2 * torch.randn(b, 1, 1, 1, device=x.device)
    x = x * (1 + 0.1 * torch.randn(b, 1, 1, 1, device=x.device))
    mask = random_erase_mask(b, x.shape[2], x.shape[3], device=x.device if mask_on_device else "cpu")
    return x * mask.to(x.device)


def review_hcl(fstudent: list[torch.Tensor], fteacher: list[torch.Tensor]) -> torch.Tensor:
    """ReviewKD's ``hcl``: per level F.mse_loss plus adaptive_avg_pool2d of both sides, as its code writes it."""
    loss_all = 0.0
    for fs, ft in zip(fstudent, fteacher):
        h = fs.shape[2]
        loss = nn.functional.mse_loss(fs, ft, reduction="mean")
        cnt, tot = 1.0, 1.0
        for k in (4, 2, 1):
            if k >= h:
                continue
            cnt /= 2.0
            loss = loss + nn.functional.mse_loss(nn.functional.adaptive_avg_pool2d(fs, (k, k)),
                                                 nn.functional.adaptive_avg_pool2d(ft, (k, k))) * cnt
            tot += cnt
        loss_all = loss_all + loss / tot
    return loss_all


def sigmoid_kd(student: list[torch.Tensor], teacher: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Dense per-class sigmoid KD written out: softened probabilities, the binary KL, the objectness weights."""
    num, den = 0.0, 0.0
    for s, t in zip(student, teacher):
        p = torch.sigmoid(s[..., 5:] / temperature)
        q = torch.sigmoid(t[..., 5:] / temperature)
        kl = q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))
        w = torch.sigmoid(t[..., 4])
        num = num + (w * kl.sum(-1)).sum()
        den = den + w.sum()
    return temperature ** 2 * num / den


def dicod_crops(images: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DICOD's box crops written out: an affine matrix per box, ``affine_grid``, ``grid_sample`` over the box's
    image, then the 4x4 and 8x8 ``adaptive_avg_pool2d`` the localization loss compares."""
    b, k = boxes.shape[:2]
    c, h, w = images.shape[1:]
    x1, y1, x2, y2 = boxes.unbind(-1)
    zero = torch.zeros_like(x1)
    theta = torch.stack([torch.stack([x2 - x1, zero, x1 + x2 - 1], -1),
                         torch.stack([zero, y2 - y1, y1 + y2 - 1], -1)], -2).reshape(b * k, 2, 3)
    grid = nn.functional.affine_grid(theta, [b * k, c, size, size], align_corners=False)
    crops = nn.functional.grid_sample(images[:, None].expand(b, k, c, h, w).reshape(b * k, c, h, w), grid,
                                      mode="bilinear", padding_mode="zeros", align_corners=False)
    return nn.functional.adaptive_avg_pool2d(crops, 4), nn.functional.adaptive_avg_pool2d(crops, 8)


class _RoundSTE(torch.autograd.Function):
    """DFQ-Dojo's ``Round``: sign(x)·floor(|x| + 0.5) forward, identity backward."""

    @staticmethod
    def forward(ctx, x):
        return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)

    @staticmethod
    def backward(ctx, grad):
        return grad.clone()


class DFQLSQ(torch.autograd.Function):
    """DFQ-Dojo's ``FunLSQ``: the forward through the STE round, the backward from float masks. Theirs is per
    tensor; a step shaped to broadcast (C, 1, 1, 1) gets its gradient summed to that shape."""

    @staticmethod
    def forward(ctx, x, alpha, g, qn, qp):
        ctx.save_for_backward(x, alpha)
        ctx.other = g, qn, qp
        return _RoundSTE.apply(torch.div(x, alpha).clamp(qn, qp)) * alpha

    @staticmethod
    def backward(ctx, grad):
        x, alpha = ctx.saved_tensors
        g, qn, qp = ctx.other
        q = x / alpha
        smaller, bigger = (q < qn).float(), (q > qp).float()
        between = 1.0 - smaller - bigger
        grad_alpha = ((smaller * qn + bigger * qp + between * _RoundSTE.apply(q) - between * q) * grad * g)
        return between * grad, grad_alpha.sum_to_size(alpha.shape), None, None, None  # per tensor: .sum() as theirs
