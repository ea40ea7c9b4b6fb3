"""Per-channel moments of a BN input and the closed-form input gradient of any loss on them.

The input is viewed as (N, C, S) with arbitrary strides (NCHW: stride_s = 1; channels_last: stride_c = 1).
Forward is a deterministic two-stage reduction: each program sums (x - shift) and (x - shift)^2 in fp32 over
a tile of S and a chunk of N and writes one partial row; the partial rows are summed afterwards (no atomics).
Backward writes dx = gm[c] + beta[c] * (x - mu[c]): one read of x, one write of dx.

The BN+activation variants fold the eval-mode BatchNorm and the activation (a leaky ReLU of any slope, or SiLU)
into the same passes: forward also writes y = act(scale * x + bias) from the x it reads, and backward adds the
activation's and BN's gradient gy * scale * act'(scale * x + bias), so a Conv-BN-activation block costs one read of
the conv output in each direction for its activation and its statistics together.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import check_float, next_pow2_capped


@triton.jit
def _moments_partial_kernel(
    x_ptr, shift_ptr, psum_ptr, psq_ptr,
    y_ptr, scale_ptr, bias_ptr, slope,
    N, C, S, n_per_prog,
    stride_n, stride_c, stride_s, sy_n, sy_c, sy_s,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, WRITE_Y: tl.constexpr, SILU: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_n = tl.program_id(2)
    s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (s < S)[:, None] & (c < C)[None, :]
    shift = tl.load(shift_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    offs = s[:, None].to(tl.int64) * stride_s + c[None, :].to(tl.int64) * stride_c
    if WRITE_Y:
        scale = tl.load(scale_ptr + c, mask=c < C, other=0.0)
        bias = tl.load(bias_ptr + c, mask=c < C, other=0.0)
        y_offs = s[:, None].to(tl.int64) * sy_s + c[None, :].to(tl.int64) * sy_c
    acc = tl.zeros([BLOCK_S, BLOCK_C], dtype=tl.float32)
    acc_sq = tl.zeros([BLOCK_S, BLOCK_C], dtype=tl.float32)
    n_start = (pid_n * n_per_prog).to(tl.int64)
    n_count = tl.minimum(n_per_prog, N - pid_n * n_per_prog)
    for i in range(0, n_count):
        v = tl.load(x_ptr + (n_start + i) * stride_n + offs, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, v - shift[None, :], 0.0)
        if WRITE_Y:
            z = v * scale[None, :] + bias[None, :]
            if SILU:
                z = z * tl.sigmoid(z)
            else:
                z = tl.where(z > 0, z, z * slope)
            tl.store(y_ptr + (n_start + i) * sy_n + y_offs, z.to(y_ptr.dtype.element_ty), mask=mask)
        acc += d
        acc_sq += d * d
    row = pid_n * tl.num_programs(0) + pid_s
    tl.store(psum_ptr + row * C + c, tl.sum(acc, axis=0), mask=c < C)
    tl.store(psq_ptr + row * C + c, tl.sum(acc_sq, axis=0), mask=c < C)


@triton.jit
def _affine_grad_kernel(
    x_ptr, dx_ptr, gm_ptr, beta_ptr, mu_ptr,
    gy_ptr, scale_ptr, bias_ptr, slope,
    C, S,
    sx_n, sx_c, sx_s, sd_n, sd_c, sd_s, sg_n, sg_c, sg_s,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, HAS_GY: tl.constexpr, SILU: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    s = (pid_s * BLOCK_S + tl.arange(0, BLOCK_S)).to(tl.int64)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    mask = (s < S)[:, None] & cmask[None, :]
    gm = tl.load(gm_ptr + c, mask=cmask, other=0.0)
    beta = tl.load(beta_ptr + c, mask=cmask, other=0.0)
    mu = tl.load(mu_ptr + c, mask=cmask, other=0.0)
    c64 = c.to(tl.int64)
    x = tl.load(x_ptr + n * sx_n + s[:, None] * sx_s + c64[None, :] * sx_c, mask=mask, other=0.0)
    x = x.to(tl.float32)
    dx = gm[None, :] + beta[None, :] * (x - mu[None, :])
    if HAS_GY:
        scale = tl.load(scale_ptr + c, mask=cmask, other=0.0)
        bias = tl.load(bias_ptr + c, mask=cmask, other=0.0)
        gy = tl.load(gy_ptr + n * sg_n + s[:, None] * sg_s + c64[None, :] * sg_c, mask=mask, other=0.0)
        z = x * scale[None, :] + bias[None, :]
        if SILU:
            sig = tl.sigmoid(z)
            act_grad = sig * (1.0 + z * (1.0 - sig))
        else:
            act_grad = tl.where(z > 0, 1.0, slope)
        dx += gy.to(tl.float32) * scale[None, :] * act_grad
    tl.store(dx_ptr + n * sd_n + s[:, None] * sd_s + c64[None, :] * sd_c,
             dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _tiles(C: int, S: int, stride_c: int) -> tuple[int, int]:
    """Tile (BLOCK_S, BLOCK_C): long along whichever of S and C is contiguous in memory."""
    if stride_c == 1 and C > 1:
        block_c = next_pow2_capped(C, 64)
        return next_pow2_capped(S, max(2048 // block_c, 1)), block_c
    block_s = next_pow2_capped(S, 1024)
    return block_s, next_pow2_capped(C, max(2048 // block_s, 1))


def moments(x: torch.Tensor, shift: torch.Tensor, act: tuple | None = None,
            target_programs: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean(x) - shift, biased var(x)) in fp32 for x of shape (N, C, S). With ``act`` =
    (y, scale, bias, slope, silu), y (x's shape) is also written with act(scale * x + bias) in the same pass: SiLU
    when ``silu``, else a leaky ReLU of negative slope ``slope``."""
    check_float(x, "x")
    N, C, S = x.shape
    shift = shift.to(device=x.device, dtype=torch.float32).contiguous()
    y, scale, bias, slope, silu = act if act is not None else (x, shift, shift, 0.0, False)
    block_s, block_c = _tiles(C, S, x.stride(1))
    grid_s, grid_c = triton.cdiv(S, block_s), triton.cdiv(C, block_c)
    n_chunks = max(1, min(N, target_programs // max(grid_s * grid_c, 1)))
    n_per_prog = triton.cdiv(N, n_chunks)
    n_chunks = triton.cdiv(N, n_per_prog)
    psum = torch.empty((n_chunks * grid_s, C), device=x.device, dtype=torch.float32)
    psq = torch.empty_like(psum)
    _moments_partial_kernel[(grid_s, grid_c, n_chunks)](
        x, shift, psum, psq, y, scale.float().contiguous(), bias.float().contiguous(), float(slope),
        N, C, S, n_per_prog, x.stride(0), x.stride(1), x.stride(2), y.stride(0), y.stride(1), y.stride(2),
        BLOCK_S=block_s, BLOCK_C=block_c, WRITE_Y=act is not None, SILU=bool(silu),
    )
    count = N * S
    dmean = psum.sum(0) / count
    var = (psq.sum(0) / count - dmean * dmean).clamp_min(0.0)
    return dmean, var


def affine_grad(x: torch.Tensor, gm: torch.Tensor, beta: torch.Tensor, mu: torch.Tensor,
                act: tuple | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """dx = gm[c] + beta[c] * (x - mu[c]) for x of shape (N, C, S); with ``act`` = (gy, scale, bias, slope, silu)
    also + gy * scale * act'(scale * x + bias) (SiLU or leaky ReLU, as in :func:`moments`). dx has x's dtype and
    strides (or is written into ``out``)."""
    check_float(x, "x")
    N, C, S = x.shape
    dx = torch.empty_like(x) if out is None else out
    gy, scale, bias, slope, silu = act if act is not None else (x, gm, gm, 0.0, False)
    block_s, block_c = _tiles(C, S, x.stride(1))
    grid = (triton.cdiv(S, block_s), triton.cdiv(C, block_c), N)
    _affine_grad_kernel[grid](
        x, dx, gm.float().contiguous(), beta.float().contiguous(), mu.float().contiguous(),
        gy, scale.float().contiguous(), bias.float().contiguous(), float(slope), C, S,
        x.stride(0), x.stride(1), x.stride(2), dx.stride(0), dx.stride(1), dx.stride(2),
        gy.stride(0), gy.stride(1), gy.stride(2),
        BLOCK_S=block_s, BLOCK_C=block_c, HAS_GY=act is not None, SILU=bool(silu),
    )
    return dx
