"""Total-variation image prior (method.md §2.2).

Four neighbour differences per channel — horizontal, vertical and the two diagonals —
TV_L1 = sum_k mean(|d_k|) (batch-size independent) and TV_L2 = sum_k ||d_k||_F (whole-batch Frobenius norm,
not squared). The fused path computes the 8 sums (|d_k| and d_k^2) in one pass over the image and the
gradient of both terms in one pass (each pixel gathers from its 3x3 neighbourhood); both halves exist as
Triton kernels and as torch code (compiled by inductor on CPU, once per image shape). Results are fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastdiode.ops.tensor_checks import require_float, require_rank, upcast
from fastdiode.runtime.backend import compiled, resolve_backend


def tv_prior_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The specification in plain torch: (TV_L1, TV_L2) of x (N, C, H, W), computed in fp32 (or fp64)."""
    a = upcast(x)
    diffs = (
        a[..., :, :-1] - a[..., :, 1:],
        a[..., :-1, :] - a[..., 1:, :],
        a[..., 1:, :-1] - a[..., :-1, 1:],
        a[..., :-1, :-1] - a[..., 1:, 1:],
    )
    tv_l1 = sum(d.abs().mean() for d in diffs)
    tv_l2 = sum(torch.linalg.vector_norm(d) for d in diffs)
    return tv_l1, tv_l2


def _counts(x: torch.Tensor) -> tuple[int, int, int, int]:
    n, c, h, w = x.shape
    return n * c * h * (w - 1), n * c * (h - 1) * w, n * c * (h - 1) * (w - 1), n * c * (h - 1) * (w - 1)


def _boundary_masks(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """(up, down) as (H, 1) and (left, right) as (1, W) float masks: 1 where that neighbour exists."""
    rows = torch.arange(h, device=device)[:, None]
    cols = torch.arange(w, device=device)[None]
    return tuple(m.to(dtype) for m in (rows >= 1, rows < h - 1, cols >= 1, cols < w - 1))


def _shifted(padded: torch.Tensor):
    """A function (dy, dx) -> the view of the 1-padded image whose (h, w) holds x[h + dy, w + dx]."""
    h, w = padded.shape[-2] - 2, padded.shape[-1] - 2
    return lambda dy, dx: padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def _tv_sums_torch(padded, up, down, left, right) -> torch.Tensor:
    """(8,): sum |d_k| for k = 1..4, then sum d_k^2; differences on the full (H, W) domain, masked. Takes the
    image padded by 1 on every side (so that the compiled loop has no bounds checks) and the boundary masks."""
    at = _shifted(padded)
    a = at(0, 0)
    d = (right * (a - at(0, 1)), down * (a - at(1, 0)), down * right * (at(1, 0) - at(0, 1)),
         down * right * (a - at(1, 1)))
    return torch.stack([t.abs().sum() for t in d] + [(t * t).sum() for t in d]).float()


def _tv_grad_torch(padded, coef, up, down, left, right, dtype: torch.dtype) -> torch.Tensor:
    """dx for dL/dd_k = coef[k] * sign(d_k) + coef[4 + k] * d_k; each pixel gathers the differences it is in."""
    at = _shifted(padded)
    a = at(0, 0)
    c = coef.to(a.dtype)

    def term(k, d, mask):
        return mask * (c[k] * torch.sign(d) + c[4 + k] * d)

    g = term(0, a - at(0, 1), right) - term(0, at(0, -1) - a, left)
    g = g + term(1, a - at(1, 0), down) - term(1, at(-1, 0) - a, up)
    g = g + term(2, a - at(-1, 1), up * right) - term(2, at(1, -1) - a, down * left)
    g = g + term(3, a - at(1, 1), down * right) - term(3, at(-1, -1) - a, up * left)
    return g.to(dtype)


_sums_compiled = compiled(_tv_sums_torch, dynamic=False)
_grad_compiled = compiled(_tv_grad_torch, dynamic=False)


@torch.library.custom_op("fastdiode::tv_sums", mutates_args=())
def _tv_sums_triton(x: torch.Tensor) -> torch.Tensor:
    from fastdiode.kernels.tv import tv_sums

    return tv_sums(x)


@_tv_sums_triton.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(8, dtype=torch.float32)


@torch.library.custom_op("fastdiode::tv_grad", mutates_args=())
def _tv_grad_triton(x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    from fastdiode.kernels.tv import tv_grad

    return tv_grad(x, coef)


@_tv_grad_triton.register_fake
def _(x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class TVPriorFn(torch.autograd.Function):
    """(TV_L1, TV_L2): one pass forward, one pass backward; ``use_triton`` picks kernels or compiled torch
    (which works on a 1-padded copy of the image, made once and kept for the backward)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, use_triton: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.use_triton, ctx.dtype, ctx.counts = use_triton, x.dtype, _counts(x)
        if use_triton:
            saved, sums = x, _tv_sums_triton(x)
        else:
            saved = F.pad(upcast(x), (1, 1, 1, 1))
            ctx.masks = _boundary_masks(x.shape[2], x.shape[3], x.device, saved.dtype)
            sums = _sums_compiled(saved, *ctx.masks)
        norms = sums[4:].sqrt()
        ctx.save_for_backward(saved, norms)
        return sum(sums[k] / ctx.counts[k] for k in range(4)), norms.sum()

    @staticmethod
    def backward(ctx, g_l1: torch.Tensor | None, g_l2: torch.Tensor | None):
        saved, norms = ctx.saved_tensors
        g_l1 = torch.zeros_like(norms[0]) if g_l1 is None else g_l1
        g_l2 = torch.zeros_like(norms[0]) if g_l2 is None else g_l2
        per_l1 = torch.stack([g_l1 / n for n in ctx.counts])
        per_l2 = torch.where(norms > 0, g_l2 / torch.where(norms > 0, norms, 1.0), 0.0)
        coef = torch.cat([per_l1, per_l2])
        if ctx.use_triton:
            return _tv_grad_triton(saved, coef), None
        return _grad_compiled(saved, coef, *ctx.masks, ctx.dtype), None


def tv_prior(x: torch.Tensor, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(TV_L1, TV_L2) of an image batch x (N, C, H, W), H, W >= 2, as 0-dim fp32 tensors with gradient."""
    require_float(x, "x")
    require_rank(x, "x", (4,), "(N, C, H, W)")
    if x.shape[2] < 2 or x.shape[3] < 2:
        raise ValueError(f"x: the TV prior needs H >= 2 and W >= 2, got shape {tuple(x.shape)}")
    choice = resolve_backend("tv_prior", backend, x)
    if choice == "reference":
        return tv_prior_reference(x)
    return TVPriorFn.apply(x, choice == "triton")
