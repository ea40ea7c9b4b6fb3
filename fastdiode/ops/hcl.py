"""Hierarchical context loss of ReviewKD (method.md §8), summed over feature levels.

Per level, with d = F_s - F_t of shape (N, C, H, W):

    HCL = (mean(d²) + Σ_j w_j · mean(avgpool_{k_j}(d)²)) / (1 + Σ_j w_j)

over the pooled sizes k_j in (4, 2, 1) with k_j < H, weighted 1/2, 1/4, 1/8 over the kept sizes in that order,
as ReviewKD's code (avgpool is adaptive average pooling to k×k; it is linear, so pooling F_s and F_t apart, as
ReviewKD does, equals pooling d once).

Both fast paths read each (F_s, F_t) pair once. ``triton``: one program per feature plane writes the plane's
sum of d² and every pooled bin's sum of d (the bins overlap where k does not divide H or W), and the backward
is one closed-form pass, dL/dd = a·d + Σ_b c_b·[in bin b]; one launch per level. ``torch`` (the CPU path): the
same loss written on d and compiled by inductor over all levels at once, which fuses the forward and the
backward into a few loops.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from fastdiode.ops.tensor_checks import require_float, require_rank, upcast
from fastdiode.runtime.backend import compiled, resolve_backend

POOL_SIZES = (4, 2, 1)


def pool_weights(h: int) -> list[tuple[int, float]]:
    """(k, w_k) of the pooled terms of a level of height ``h``: k in 4, 2, 1 with k < h, weights halving from 1/2
    over the kept sizes (ReviewKD's ``cnt /= 2`` per kept size)."""
    kept = [k for k in POOL_SIZES if k < h]
    return [(k, 0.5 ** (i + 1)) for i, k in enumerate(kept)]


def hcl_loss_reference(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """The specification, written as ReviewKD writes it: per level F.mse_loss plus adaptive_avg_pool2d terms."""
    total = 0.0
    for fs, ft in zip(student, teacher):
        fs, ft = upcast(fs), upcast(ft)
        loss, tot = F.mse_loss(fs, ft), 1.0
        for k, w in pool_weights(fs.shape[2]):
            loss = loss + w * F.mse_loss(F.adaptive_avg_pool2d(fs, k), F.adaptive_avg_pool2d(ft, k))
            tot += w
        total = total + loss / tot
    return total


def _hcl_on_differences(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """The loss written on d = F_s - F_t, pooled once per size: what inductor compiles for the CPU."""
    total = 0.0
    for fs, ft in zip(student, teacher):
        d = upcast(fs) - upcast(ft)
        loss, tot = (d * d).mean(), 1.0
        for k, w in pool_weights(d.shape[2]):
            p = F.adaptive_avg_pool2d(d, k)
            loss = loss + w * (p * p).mean()
            tot += w
        total = total + loss / tot
    return total


_hcl_compiled = compiled(_hcl_on_differences, dynamic=False)


@functools.lru_cache(maxsize=64)
def _bin_counts(h: int, w: int, sizes: tuple[int, ...]) -> torch.Tensor:
    """Pixels in each adaptive bin, in the kernel's order: 1 (the d² slot), then row-major per size."""
    counts = [1.0]
    for k in sizes:
        rows = [-((-(i + 1) * h) // k) - (i * h) // k for i in range(k)]
        cols = [-((-(j + 1) * w) // k) - (j * w) // k for j in range(k)]
        counts += [float(r * c) for r in rows for c in cols]
    return torch.tensor(counts, dtype=torch.float32)


@torch.library.custom_op("fastdiode::hcl_sums", mutates_args=())
def _hcl_sums_triton(s: torch.Tensor, t: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    from fastdiode.kernels.hcl import hcl_sums

    return hcl_sums(s, t, sizes)


@_hcl_sums_triton.register_fake
def _(s, t, sizes):
    return s.new_empty(s.shape[0] * s.shape[1], 1 + sum(k * k for k in sizes), dtype=torch.float32)


@torch.library.custom_op("fastdiode::hcl_grad", mutates_args=())
def _hcl_grad_triton(s: torch.Tensor, t: torch.Tensor, coef: torch.Tensor, sizes: list[int],
                     write_teacher: bool) -> list[torch.Tensor]:
    from fastdiode.kernels.hcl import hcl_grad

    gs, gt = hcl_grad(s, t, coef, sizes, write_teacher)
    return [gs, gt] if write_teacher else [gs]


@_hcl_grad_triton.register_fake
def _(s, t, coef, sizes, write_teacher):
    return [torch.empty_like(s), torch.empty_like(t)] if write_teacher else [torch.empty_like(s)]


class HCLLevel(torch.autograd.Function):
    """One level of the fused HCL over the Triton kernels: one pass forward, one closed-form pass backward."""

    @staticmethod
    def forward(ctx, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n, c, h, w = s.shape
        kw = pool_weights(h)
        sizes = [k for k, _ in kw]
        sums = _hcl_sums_triton(s, t, sizes)
        counts = _bin_counts(h, w, tuple(sizes)).to(sums.device)
        pooled = sums / counts  # slot 0 stays the sum of d²
        inv_tot = 1.0 / (1.0 + sum(wk for _, wk in kw))
        scale = torch.zeros_like(counts)  # per slot: w_k / (N·C·k²), the mean over the level's pooled map
        at = 1
        for k, wk in kw:
            scale[at:at + k * k] = wk / (n * c * k * k)
            at += k * k
        loss = (sums[:, 0].sum() / s.numel() + (pooled[:, 1:] ** 2 * scale[1:]).sum()) * inv_tot
        ctx.save_for_backward(s, t, pooled, scale, counts)
        ctx.sizes, ctx.inv_tot = sizes, inv_tot
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        s, t, pooled, scale, counts = ctx.saved_tensors
        coef = 2.0 * ctx.inv_tot * grad * pooled * scale / counts  # c_b = dL/dpooled_b / count_b
        coef[:, 0] = 2.0 * ctx.inv_tot * grad / s.numel()  # a
        grads = _hcl_grad_triton(s, t, coef, ctx.sizes, ctx.needs_input_grad[1])
        return grads[0] if ctx.needs_input_grad[0] else None, grads[1] if ctx.needs_input_grad[1] else None


def _check(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> None:
    if len(student) != len(teacher) or not student:
        raise ValueError(f"student, teacher: expected the same number (>= 1) of feature levels, got {len(student)} "
                         f"and {len(teacher)}")
    for i, (s, t) in enumerate(zip(student, teacher)):
        require_float(s, f"student[{i}]")
        require_float(t, f"teacher[{i}]")
        require_rank(s, f"student[{i}]", (4,), "(N, C, H, W)")
        if s.shape != t.shape:
            raise ValueError(f"level {i}: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ; adapt the "
                             "student's features to the teacher's first (ReviewKD's ABF does)")


def hcl_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], backend: str | None = None) -> torch.Tensor:
    """ReviewKD's hierarchical context loss summed over levels (0-dim, fp32 or fp64); any H, W (non-square too),
    NCHW or channels_last. Gradients flow to both sides (detach the teacher's features as usual)."""
    _check(student, teacher)
    choice = resolve_backend("hcl_loss", backend, student[0])
    if choice == "triton":
        return sum(HCLLevel.apply(s, t) for s, t in zip(student, teacher))
    if choice == "torch":
        return _hcl_compiled(list(student), list(teacher))
    return hcl_loss_reference(student, teacher)
