"""The image half of DIODE's augmentation as one op (method.md §3): per-image roll-jitter, horizontal flip,
brightness/contrast affine and random-erase mask, all parameters given as device tensors.

    out[n, c, h, w] = keep[n, h, w] * (gain[n] * x[n, c, (h - sy) mod H, src_w] + bias[n])
    src_w = (W - 1 - w - sx) mod W when flip[n] else (w - sx) mod W
    keep  = 0 inside erase[n] = (y0, x0, y1, x1), a half-open rectangle (empty when y1 <= y0)

The map is a permutation per image, so the fused backward (the adjoint) is a gather through the inverse
permutation — no scatter, no atomics.
"""
from __future__ import annotations

import functools

import torch

from fastdiode.ops._common import require_float, require_rank, upcast
from fastdiode.runtime.backend import resolve_backend


def _erase_keep(erase: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 1, H, W) bool, False inside each image's erase rectangle."""
    rows = torch.arange(h, device=erase.device)
    cols = torch.arange(w, device=erase.device)
    in_rows = (rows[None] >= erase[:, 0:1]) & (rows[None] < erase[:, 2:3])
    in_cols = (cols[None] >= erase[:, 1:2]) & (cols[None] < erase[:, 3:4])
    return ~(in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def gather_affine_mask_reference(
    x: torch.Tensor,
    shift_y: torch.Tensor,
    shift_x: torch.Tensor,
    flip: torch.Tensor,
    gain: torch.Tensor,
    bias: torch.Tensor,
    erase: torch.Tensor,
) -> torch.Tensor:
    """The specification in plain torch (two gathers, an affine, a mask); autograd gives the adjoint."""
    b, c, h, w = x.shape
    rows = (torch.arange(h, device=x.device)[None] - shift_y[:, None]) % h
    cols = torch.arange(w, device=x.device)[None].expand(b, w)
    cols = (torch.where(flip[:, None].bool(), w - 1 - cols, cols) - shift_x[:, None]) % w
    y = x.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    y = y.gather(3, cols[:, None, None, :].expand(b, c, h, w))
    y = upcast(y)
    y = y * gain.to(y.dtype).view(b, 1, 1, 1) + bias.to(y.dtype).view(b, 1, 1, 1)
    return torch.where(_erase_keep(erase, h, w), y, 0.0).to(x.dtype)


@torch.library.custom_op("fastdiode::gather_affine_mask", mutates_args=())
def _gather_kernel(
    x: torch.Tensor,
    shift_y: torch.Tensor,
    shift_x: torch.Tensor,
    flip: torch.Tensor,
    gain: torch.Tensor,
    bias: torch.Tensor,
    erase: torch.Tensor,
    adjoint: bool,
) -> torch.Tensor:
    from fastdiode.kernels.augment import gather_affine_mask as launch

    return launch(x, shift_y, shift_x, flip, gain, bias, erase, adjoint)


@_gather_kernel.register_fake
def _(x, shift_y, shift_x, flip, gain, bias, erase, adjoint):
    return torch.empty_like(x)


class GatherAffineMask(torch.autograd.Function):
    """The fused augmentation through the Triton kernel; backward is the same kernel in adjoint mode."""

    @staticmethod
    def forward(ctx, x, shift_y, shift_x, flip, gain, bias, erase):
        ctx.save_for_backward(shift_y, shift_x, flip, gain, bias, erase)
        return _gather_kernel(x, shift_y, shift_x, flip, gain, bias, erase, False)

    @staticmethod
    def backward(ctx, grad):
        shift_y, shift_x, flip, gain, bias, erase = ctx.saved_tensors
        gx = _gather_kernel(grad, shift_y, shift_x, flip, gain, bias, erase, True)
        return gx, None, None, None, None, None, None


@functools.cache
def _compiled_reference():
    return torch.compile(gather_affine_mask_reference, dynamic=True)


def gather_affine_mask(
    x: torch.Tensor,
    shift_y: torch.Tensor,
    shift_x: torch.Tensor,
    flip: torch.Tensor,
    gain: torch.Tensor,
    bias: torch.Tensor,
    erase: torch.Tensor,
    backend: str | None = None,
) -> torch.Tensor:
    """Augment x (B, C, H, W) with per-image parameters: shifts (B,) int (any sign), flip (B,) bool,
    gain/bias (B,) float, erase (B, 4) int rectangles. Differentiable in x; keeps x's dtype and layout."""
    require_float(x, "x")
    require_rank(x, "x", (4,), "(B, C, H, W)")
    b, _, h, w = x.shape
    for name, t, shape in (
        ("shift_y", shift_y, (b,)), ("shift_x", shift_x, (b,)), ("flip", flip, (b,)),
        ("gain", gain, (b,)), ("bias", bias, (b,)), ("erase", erase, (b, 4)),
    ):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape} for a batch of {b}, got {tuple(t.shape)}")
    choice = resolve_backend("gather_affine_mask", backend, x)
    if choice == "triton":
        return GatherAffineMask.apply(x, shift_y % h, shift_x % w, flip, gain, bias, erase)
    fn = _compiled_reference() if choice == "compiled" else gather_affine_mask_reference
    return fn(x, shift_y, shift_x, flip, gain, bias, erase)
