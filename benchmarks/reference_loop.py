"""A faithful re-statement of the reference DIODE inversion loop (NVlabs/DIODE), for same-run baselines.

It keeps what makes the reference slow, written the way the reference writes it: BN hooks with a
permute().contiguous() variance and torch.norm, per-layer .item() logging every step, torch.roll/torch.flip
driven by Python's `random`, a random-erase mask built on the CPU, the targets round-tripped through the
CPU every step, and a teacher whose weights still require gradients (eval mode only). The detection loss is
fastdiode's yolo_loss (the same arithmetic as the reference's), so the comparison does not hinge on it.

``competent=True`` is the same loop as a careful user would run it: the teacher frozen
(``requires_grad_(False)``: no weight gradients) and run in channels_last, everything else unchanged.
"""
from __future__ import annotations

import random

import torch

from benchmarks import reference_style as ref
from fastdiode.losses import yolo_loss


def move_boxes_on_cpu(targets: torch.Tensor, dy: int, dx: int, flip: bool, size: int) -> torch.Tensor:
    """The reference moves the boxes with numpy on the host and sends them back."""
    t = targets.cpu().numpy().copy()
    t[..., 1] = t[..., 1] + dx / size
    t[..., 2] = t[..., 2] + dy / size
    if flip:
        t[..., 1] = 1 - t[..., 1]
    return torch.from_numpy(t).to(targets.device)


def reference_inversion(teacher, targets: torch.Tensor, size: int, iterations: int, lr: float = 0.2,
                        jitter: int = 16, seed: int = 0, bn_weight: float = 0.1, tv_weight: float = 75.0,
                        fp16: bool = False, competent: bool = False) -> list:
    """Run the reference loop; ``fp16`` wraps the teacher in autocast as the reference's (broken) fp16 path
    would, for a like-for-like mixed-precision comparison on a GPU; ``competent`` freezes the teacher and runs it
    in channels_last."""
    random.seed(seed)
    torch.manual_seed(seed)
    teacher.eval()  # parameters keep requires_grad=True, as in the reference
    layout = torch.channels_last if competent else torch.contiguous_format
    if competent:
        teacher.requires_grad_(False).to(memory_format=layout)
    hooks = ref.BNFeatureHooks(teacher)
    device = next(teacher.parameters()).device
    x = torch.randn(targets.shape[0], 3, size, size, device=device).clamp(0, 1).requires_grad_(True)
    targets = targets.to(device)
    opt = torch.optim.Adam([x], lr=lr, betas=(0.0, 0.0), eps=1e-8)
    log = []
    try:
        for _ in range(iterations):
            off1, off2 = random.randint(-jitter, jitter), random.randint(-jitter, jitter)
            flip = random.random() < 0.5
            inputs = torch.roll(x, shifts=(off1, off2), dims=(2, 3))
            if flip:
                inputs = torch.flip(inputs, dims=(3,))
            b = inputs.shape[0]
            inputs = (inputs + 0.2 * torch.randn(b, 1, 1, 1, device=device)) * (
                1 + 0.1 * torch.randn(b, 1, 1, 1, device=device))
            inputs = inputs * ref.random_erase_mask(b, size, size).to(inputs.device)
            moved = move_boxes_on_cpu(targets, off1, off2, flip, size)
            opt.zero_grad()
            teacher.zero_grad()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fp16):
                preds = teacher(inputs.contiguous(memory_format=layout))
            det, _ = yolo_loss(preds, moved, teacher)
            per_layer = [v.item() for v in hooks.values]  # the reference logs every layer, every step
            l1, _l2 = ref.image_prior_losses(inputs)
            loss = det + bn_weight * hooks.loss(first_bn_multiplier=3.0) + tv_weight * l1
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            log.append((loss.item(), per_layer))
    finally:
        hooks.remove()
    return log
