"""Total-variation image prior (method.md §2.2).

Four neighbour differences per channel — horizontal, vertical and the two diagonals —
TV_L1 = sum_k mean(|d_k|) (batch-size independent) and TV_L2 = sum_k ||d_k||_F (whole-batch Frobenius norm,
not squared). Both come out of one forward pass and one backward pass on the fused path; results are fp32.
"""
from __future__ import annotations

import functools

import torch

from fastdiode.ops._common import require_float, require_rank, upcast
from fastdiode.runtime.backend import resolve_backend


def _differences(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (
        x[..., :, :-1] - x[..., :, 1:],
        x[..., :-1, :] - x[..., 1:, :],
        x[..., 1:, :-1] - x[..., :-1, 1:],
        x[..., :-1, :-1] - x[..., 1:, 1:],
    )


def tv_prior_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The specification in plain torch: (TV_L1, TV_L2) of x (N, C, H, W), computed in fp32 (or fp64)."""
    diffs = _differences(upcast(x))
    tv_l1 = sum(d.abs().mean() for d in diffs)
    tv_l2 = sum(torch.linalg.vector_norm(d) for d in diffs)
    return tv_l1, tv_l2


def _counts(x: torch.Tensor) -> tuple[int, int, int, int]:
    n, c, h, w = x.shape
    return n * c * h * (w - 1), n * c * (h - 1) * w, n * c * (h - 1) * (w - 1), n * c * (h - 1) * (w - 1)


@torch.library.custom_op("fastdiode::tv_sums", mutates_args=())
def _sums_kernel(x: torch.Tensor) -> torch.Tensor:
    from fastdiode.kernels.tv import tv_sums

    return tv_sums(x)


@_sums_kernel.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(8, dtype=torch.float32)


@torch.library.custom_op("fastdiode::tv_grad", mutates_args=())
def _grad_kernel(x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    from fastdiode.kernels.tv import tv_grad

    return tv_grad(x, coef)


@_grad_kernel.register_fake
def _(x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class TVPriorFn(torch.autograd.Function):
    """(TV_L1, TV_L2) through the Triton kernels: one pass forward, one pass backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sums = _sums_kernel(x)
        norms = sums[4:].sqrt()
        ctx.counts = _counts(x)
        ctx.save_for_backward(x, norms)
        return sum(sums[k] / ctx.counts[k] for k in range(4)), norms.sum()

    @staticmethod
    def backward(ctx, g_l1: torch.Tensor | None, g_l2: torch.Tensor | None):
        x, norms = ctx.saved_tensors
        g_l1 = torch.zeros_like(norms[0]) if g_l1 is None else g_l1
        g_l2 = torch.zeros_like(norms[0]) if g_l2 is None else g_l2
        per_l1 = torch.stack([g_l1 / n for n in ctx.counts])
        per_l2 = torch.where(norms > 0, g_l2 / torch.where(norms > 0, norms, 1.0), 0.0)
        return _grad_kernel(x, torch.cat([per_l1, per_l2]))


@functools.cache
def _compiled_reference():
    return torch.compile(tv_prior_reference, dynamic=True)


def tv_prior(x: torch.Tensor, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(TV_L1, TV_L2) of an image batch x (N, C, H, W), H, W >= 2, as 0-dim fp32 tensors with gradient."""
    require_float(x, "x")
    require_rank(x, "x", (4,), "(N, C, H, W)")
    if x.shape[2] < 2 or x.shape[3] < 2:
        raise ValueError(f"x: the TV prior needs H >= 2 and W >= 2, got shape {tuple(x.shape)}")
    choice = resolve_backend("tv_prior", backend, x)
    if choice == "triton":
        return TVPriorFn.apply(x)
    if choice == "compiled":
        return _compiled_reference()(x)
    return tv_prior_reference(x)
