"""Logit distillation (method.md §8): Hinton's softmax KL for classifier heads, and its dense form for YOLO heads.

``kd_loss``: KL(softmax(t/T) ‖ softmax(s/T)) · T², averaged over the batch (Hinton; mdistiller's reduction), or
with per-row ``weights`` their weighted mean Σ w·KL / Σ w (a mask of positives keeps shapes fixed).

``dense_kd_loss`` on YOLO head maps (B, A, H, W, 5 + C), pre-NMS at the same anchors and cells: YOLO's classes
are independent sigmoids, so each class is a binary distribution softened by T,
KL_c = q·log(q/p) + (1−q)·log((1−q)/(1−p)) with q = σ(t_c/T), p = σ(s_c/T), summed over classes. Each
(anchor, cell) is weighted by the teacher's objectness w = σ(t_obj) and the sum is divided by Σw over every cell
of every scale, times T²:

    L = T² · Σ_cells w · Σ_c KL_c / Σ_cells w

Why: the YOLO loss trains class logits only where an object is assigned, so on background cells the teacher's
class logits carry no knowledge and would swamp the loss (they are ~99% of the cells); the objectness weight
keeps the cells where the teacher sees something, the normalisation makes the loss independent of how many
objects an image holds, and T² keeps the gradient's scale independent of T, as Hinton's.

The fused paths read each (student, teacher) map once and write the student's gradient,
dL/ds_c = T·w/Σw·(σ(s_c/T) − σ(t_c/T)); the teacher gets no gradient. On CUDA two Triton kernels (forward sums,
backward gradient); on CPU the loss in BCE-with-logits form, compiled with its backward by inductor (faster there
than the fused form: ``make bench``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastdiode.ops.tensor_checks import require_float, upcast
from fastdiode.runtime.backend import compiled, resolve_backend

EPS = 1e-9


def _row_mean(kl: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return kl.mean()
    w = weights.to(kl.dtype)
    return (w * kl).sum() / w.sum().clamp_min(EPS)


def kd_loss_reference(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """Hinton's KD on (N, C) logits, written out."""
    t = temperature
    log_p = F.log_softmax(upcast(student) / t, dim=1)
    q = F.softmax(upcast(teacher).detach() / t, dim=1)
    return _row_mean((q * (torch.log(q.clamp_min(1e-30)) - log_p)).sum(1), weights) * t * t


def _kd_torch(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
              weights: torch.Tensor | None) -> torch.Tensor:
    log_p = torch.log_softmax(upcast(student) / temperature, dim=1)
    log_q = torch.log_softmax(upcast(teacher).detach() / temperature, dim=1)
    return _row_mean((log_q.exp() * (log_q - log_p)).sum(1), weights) * temperature * temperature


_kd_compiled = compiled(_kd_torch, dynamic=False)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0,
            backend: str | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """KL(softmax(teacher/T) ‖ softmax(student/T)) · T², averaged over the N rows of (N, C) logits (weighted by
    ``weights`` (N,) when given). The fast path (``torch``, and ``triton`` on CUDA, where inductor writes the
    kernel) is one compiled region."""
    require_float(student, "student")
    if student.dim() != 2 or student.shape != teacher.shape:
        raise ValueError(f"student, teacher: expected (N, C) logits of one shape, got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    if weights is not None and weights.shape != student.shape[:1]:
        raise ValueError(f"weights: expected one per row, shape ({student.shape[0]},), got {tuple(weights.shape)}")
    if resolve_backend("kd_loss", backend, student) == "reference":
        return kd_loss_reference(student, teacher, temperature, weights)
    return _kd_compiled(student, teacher, float(temperature), weights)


def dense_kd_loss_reference(student: list[torch.Tensor], teacher: list[torch.Tensor],
                            temperature: float = 1.0) -> torch.Tensor:
    """The specification, written out: per-class sigmoid KL, teacher-objectness weighted, normalised, × T²."""
    t2, num, den = temperature * temperature, 0.0, 0.0
    for s, t in zip(student, teacher):
        s_cls = upcast(s[..., 5:]) / temperature
        t_cls = upcast(t[..., 5:]).detach() / temperature
        q = torch.sigmoid(t_cls)
        kl = q * (torch.log(q) - torch.log(torch.sigmoid(s_cls))) + \
            (1 - q) * (torch.log(1 - q) - torch.log(1 - torch.sigmoid(s_cls)))
        w = torch.sigmoid(upcast(t[..., 4]).detach())
        num = num + (w * kl.sum(-1)).sum()
        den = den + w.sum()
    return t2 * num / (den + EPS)


def _dense_kd_bce(student: list[torch.Tensor], teacher: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """The CPU path, compiled with its backward by inductor: KL_c written as BCE-with-logits(s_c/T, q) minus the
    teacher's own BCE(t_c/T, q), the same value in closed forms inductor fuses well (it measured faster on CPU than
    computing the gradient in the forward pass, Liger's way, which this path did before)."""
    num, den = 0.0, 0.0
    for s, t in zip(student, teacher):
        t_cls = upcast(t[..., 5:]).detach() / temperature
        q = torch.sigmoid(t_cls)
        kl = F.binary_cross_entropy_with_logits(upcast(s[..., 5:]) / temperature, q, reduction="none") - \
            F.binary_cross_entropy_with_logits(t_cls, q, reduction="none")
        w = torch.sigmoid(upcast(t[..., 4]).detach())
        num = num + (w * kl.sum(-1)).sum()
        den = den + w.sum()
    return temperature * temperature * num / (den + EPS)


_dense_kd_compiled = compiled(_dense_kd_bce, dynamic=False)


@torch.library.custom_op("fastdiode::dense_kd_sums", mutates_args=())
def _dense_kd_sums_triton(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    from fastdiode.kernels.kd import dense_kd_sums

    return dense_kd_sums(s, t, temperature)


@_dense_kd_sums_triton.register_fake
def _(s, t, temperature):
    return s.new_empty(2, dtype=torch.float32)


@torch.library.custom_op("fastdiode::dense_kd_grad", mutates_args=())
def _dense_kd_grad_triton(s: torch.Tensor, t: torch.Tensor, scale: torch.Tensor, temperature: float) -> torch.Tensor:
    from fastdiode.kernels.kd import dense_kd_grad

    return dense_kd_grad(s, t, scale, temperature)


@_dense_kd_grad_triton.register_fake
def _(s, t, scale, temperature):
    return torch.empty_like(s)


class DenseKD(torch.autograd.Function):
    """The fused dense KD over the Triton kernels; inputs are the temperature, then student_0, teacher_0, ..."""

    @staticmethod
    def forward(ctx, temperature: float, *maps: torch.Tensor) -> torch.Tensor:
        sums = torch.stack([_dense_kd_sums_triton(s, t, temperature) for s, t in zip(maps[0::2], maps[1::2])]).sum(0)
        den = sums[1] + EPS
        ctx.save_for_backward(*maps, den)
        ctx.temperature = temperature
        return temperature * temperature * sums[0] / den

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        *maps, den = ctx.saved_tensors
        scale = grad * ctx.temperature / den
        grads = [_dense_kd_grad_triton(s, t, scale, ctx.temperature) for s, t in zip(maps[0::2], maps[1::2])]
        return (None, *[g for pair in zip(grads, [None] * len(grads)) for g in pair])


def dense_kd_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], temperature: float = 1.0,
                  backend: str | None = None) -> torch.Tensor:
    """Dense KD between YOLO head maps of the same layout (see the module docstring); 0-dim fp32. The teacher's
    maps get no gradient."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"student, teacher: expected the same number (>= 1) of head maps, got {len(student)} and "
                         f"{len(teacher)}")
    for i, (s, t) in enumerate(zip(student, teacher)):
        require_float(s, f"student[{i}]")
        if s.dim() != 5 or s.shape != t.shape or s.shape[-1] < 6:
            raise ValueError(f"scale {i}: student map {tuple(s.shape)} vs teacher {tuple(t.shape)}: dense KD needs "
                             "(B, A, H, W, 5 + C) maps of one layout (the same anchors, grid and classes)")
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    choice = resolve_backend("dense_kd_loss", backend, student[0])
    if choice == "triton":
        return DenseKD.apply(float(temperature), *[m for pair in zip(student, teacher) for m in pair])
    if choice == "torch":
        return _dense_kd_compiled(student, teacher, float(temperature))
    return dense_kd_loss_reference(student, teacher, temperature)
