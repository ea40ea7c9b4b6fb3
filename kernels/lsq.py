"""LSQ fake quantization (Esser et al., ICLR 2020) of a tensor viewed as (C, M): one scale per row (per-channel
weights, C = output channels) or one for all (per-tensor, C = 1), the rows dense in memory.

Forward: y = clamp(round(x / s), qmin, qmax) * s, rounding half to even (as torch.round). Backward, one pass: the
straight-through gradient dx = gy * [qmin <= x / s <= qmax], and the scale's gradient
ds = grad_scale * sum(gy * (round(v) - v inside the range, qmin below it, qmax above it)) with v = x / s: each
program writes one fp32 partial sum of its tile, summed per row afterwards (deterministic, no atomics).
x / s is IEEE-rounded, as torch's. LSQ's code divides by the gradient-scaled step (s - s·g) + s·g, which can be an
ulp off s (about 1 step in 400 for g = 0.01): an x within that ulp of a half-integer step then rounds the other way
in the two.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import check_float, next_pow2_capped


@triton.jit
def _round_half_even(v):
    """torch.round exactly: v - floor(v) is exact in fp32, where floor(v + 0.5) would round v + 0.5 first (and
    take the float just below k + 0.5 up to k + 1)."""
    f = tl.floor(v)
    r = v - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    return tl.where((r > 0.5) | ((r == 0.5) & odd), f + 1.0, f)


@triton.jit
def _lsq_forward_kernel(x_ptr, y_ptr, s_ptr, M, qmin, qmax, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < M
    offs = row.to(tl.int64) * M + cols
    s = tl.load(s_ptr + row).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    q = tl.minimum(tl.maximum(_round_half_even(tl.div_rn(x, s)), qmin), qmax)  # IEEE x / s, as torch
    tl.store(y_ptr + offs, (q * s).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _lsq_backward_kernel(x_ptr, g_ptr, dx_ptr, s_ptr, part_ptr, M, qmin, qmax, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    tile = tl.program_id(1)
    cols = tile * BLOCK + tl.arange(0, BLOCK)
    mask = cols < M
    offs = row.to(tl.int64) * M + cols
    s = tl.load(s_ptr + row).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    v = tl.div_rn(x, s)
    inside = (v >= qmin) & (v <= qmax)
    tl.store(dx_ptr + offs, tl.where(inside, g, 0.0).to(dx_ptr.dtype.element_ty), mask=mask)
    ds = tl.where(inside, _round_half_even(v) - v, tl.where(v < qmin, qmin, qmax))
    tl.store(part_ptr + row * tl.num_programs(1) + tile, tl.sum(tl.where(mask, g * ds, 0.0), axis=0))


def _block(m: int) -> int:
    return next_pow2_capped(m, 4096)


def lsq_forward(x: torch.Tensor, scale: torch.Tensor, qmin: float, qmax: float, y: torch.Tensor) -> None:
    """Write y of x into ``y``, both (C, M) with rows dense (row stride M, unit column stride); scale (C,) fp32."""
    check_float(x, "x")
    c, m = x.shape
    block = _block(m)
    _lsq_forward_kernel[(c, triton.cdiv(m, block))](x, y, scale, m, float(qmin), float(qmax), BLOCK=block)


def lsq_backward(x: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor, qmin: float, qmax: float,
                 dx: torch.Tensor) -> torch.Tensor:
    """Write dx into ``dx`` and return the per-row sums of gy * dy/ds (before the gradient scale), for x, grad, dx
    (C, M) with rows dense, scale (C,) fp32."""
    check_float(x, "x")
    c, m = x.shape
    block = _block(m)
    tiles = triton.cdiv(m, block)
    partial = torch.empty((c, tiles), device=x.device, dtype=torch.float32)
    _lsq_backward_kernel[(c, tiles)](x, grad, dx, scale, partial, m, float(qmin), float(qmax), BLOCK=block)
    return partial.sum(1)
