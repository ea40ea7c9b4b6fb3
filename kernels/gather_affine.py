"""DIODE's batch augmentation as one gather: roll-jitter, horizontal flip, per-image affine, erase mask.

Per image n (all parameters are device tensors, so nothing syncs with the host):
  forward   out[h, w] = keep(h, w) * (gain * x[(h - dy) mod H, src_w] + bias)
            src_w = (W - 1 - w - dx) mod W if flipped else (w - dx) mod W
  backward  (the adjoint; the map is a permutation, so it is a gather too — no scatter, no atomics)
            gx[h, w] = keep(f(h, w)) * gain * gy[f(h, w)],   f = the inverse of the forward source map
where keep is 0 inside the erase rectangle [y0, y1) x [x0, x1). Shifts must be given in [0, H) / [0, W).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import check_float, next_pow2_capped


@triton.jit
def _gather_kernel(
    x_ptr, out_ptr, dy_ptr, dx_ptr, flip_ptr, gain_ptr, bias_ptr, erase_ptr,
    C, H, W, sn, sc, sh, sw, on, oc, oh, ow,
    ADJOINT: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    plane = tl.program_id(0)
    n = plane // C
    ch = plane % C
    h = (tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H))[:, None]
    w = (tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W))[None, :]
    dy = tl.load(dy_ptr + n)
    dx = tl.load(dx_ptr + n)
    flip = tl.load(flip_ptr + n)
    gain = tl.load(gain_ptr + n)
    y0 = tl.load(erase_ptr + 4 * n)
    x0 = tl.load(erase_ptr + 4 * n + 1)
    y1 = tl.load(erase_ptr + 4 * n + 2)
    x1 = tl.load(erase_ptr + 4 * n + 3)
    if ADJOINT:
        hs = (h + dy) % H
        ws = tl.where(flip != 0, (2 * W - 1 - w - dx) % W, (w + dx) % W)
        qh = hs
        qw = ws
        bias = 0.0
    else:
        hs = (h - dy + H) % H
        ws = tl.where(flip != 0, (2 * W - 1 - w - dx) % W, (w - dx + W) % W)
        qh = h
        qw = w
        bias = tl.load(bias_ptr + n)
    inside = (h < H) & (w < W)
    erased = (qh >= y0) & (qh < y1) & (qw >= x0) & (qw < x1)
    src = x_ptr + n.to(tl.int64) * sn + ch.to(tl.int64) * sc + hs.to(tl.int64) * sh + ws.to(tl.int64) * sw
    v = tl.load(src, mask=inside, other=0.0).to(tl.float32)
    y = tl.where(erased, 0.0, gain * v + bias)
    dst = out_ptr + n.to(tl.int64) * on + ch.to(tl.int64) * oc + h.to(tl.int64) * oh + w.to(tl.int64) * ow
    tl.store(dst, y.to(out_ptr.dtype.element_ty), mask=inside)


def gather_affine_mask(
    x: torch.Tensor,
    shift_y: torch.Tensor,
    shift_x: torch.Tensor,
    flip: torch.Tensor,
    gain: torch.Tensor,
    bias: torch.Tensor,
    erase: torch.Tensor,
    adjoint: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the augmentation (or, with ``adjoint=True``, its adjoint) to x (N, C, H, W); keeps x's strides."""
    check_float(x, "x")
    N, C, H, W = x.shape
    out = torch.empty_like(x) if out is None else out
    bw = next_pow2_capped(W, 128)
    bh = next_pow2_capped(H, max(2048 // bw, 1))
    grid = (N * C, triton.cdiv(H, bh), triton.cdiv(W, bw))
    i32 = dict(dtype=torch.int32)
    _gather_kernel[grid](
        x, out,
        shift_y.to(**i32).contiguous(), shift_x.to(**i32).contiguous(), flip.to(**i32).contiguous(),
        gain.float().contiguous(), bias.float().contiguous(), erase.to(**i32).contiguous(),
        C, H, W, *x.stride(), *out.stride(),
        ADJOINT=adjoint, BLOCK_H=bh, BLOCK_W=bw,
    )
    return out
