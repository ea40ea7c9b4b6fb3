"""Dense knowledge distillation on YOLO head maps (B, A, H, W, 5 + C), any strides: temperature-softened binary
(per-class sigmoid) KL between the teacher's and the student's class logits at every anchor and cell, weighted by
the teacher's objectness. Forward: each program reads a block of rows (cells x anchors) once and writes its
partial sums of w·Σ_c KL and of w; backward: one pass writing the student map's whole gradient (zero outside
the class slots), dL/ds = T·w/W·(σ(s/T) − σ(t/T))."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import check_float, next_pow2_capped


@triton.jit
def _row_offsets(r, A, H, W, s_b, s_a, s_h, s_w):
    w = r % W
    h = (r // W) % H
    a = (r // (W * H)) % A
    b = r // (W * H * A)
    return b.to(tl.int64) * s_b + a.to(tl.int64) * s_a + h.to(tl.int64) * s_h + w.to(tl.int64) * s_w


@triton.jit
def _rows(t_ptr, R, A, H, W, s_b, s_a, s_h, s_w, t_b, t_a, t_h, t_w, t_d, BLOCK_R: tl.constexpr):
    """This program's rows: which are live, their student and teacher offsets, the teacher's objectness."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    live = r < R
    s_row = _row_offsets(r, A, H, W, s_b, s_a, s_h, s_w)
    t_row = _row_offsets(r, A, H, W, t_b, t_a, t_h, t_w)
    t_obj = tl.load(t_ptr + t_row + 4 * t_d, mask=live, other=-float("inf")).to(tl.float32)
    return r, live, s_row, t_row, 1.0 / (1.0 + tl.exp(-t_obj))


@triton.jit
def _log_sigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _dense_kd_kernel(
    s_ptr, t_ptr, part_ptr, R, A, H, W, D, inv_t,
    s_b, s_a, s_h, s_w, s_d, t_b, t_a, t_h, t_w, t_d,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    r, live, s_row, t_row, obj = _rows(t_ptr, R, A, H, W, s_b, s_a, s_h, s_w, t_b, t_a, t_h, t_w, t_d, BLOCK_R)
    weight = tl.where(live, obj, 0.0)
    kl = tl.zeros([BLOCK_R], dtype=tl.float32)
    for c0 in range(5, D, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m = live[:, None] & (c < D)[None, :]
        s = tl.load(s_ptr + s_row[:, None] + c[None, :].to(tl.int64) * s_d, mask=m, other=0.0).to(tl.float32) * inv_t
        t = tl.load(t_ptr + t_row[:, None] + c[None, :].to(tl.int64) * t_d, mask=m, other=0.0).to(tl.float32) * inv_t
        q = 1.0 / (1.0 + tl.exp(-t))
        term = q * (_log_sigmoid(t) - _log_sigmoid(s)) + (1.0 - q) * (_log_sigmoid(-t) - _log_sigmoid(-s))
        kl += tl.sum(tl.where(m, term, 0.0), axis=1)
    tl.store(part_ptr + pid * 2, tl.sum(weight * kl, axis=0))
    tl.store(part_ptr + pid * 2 + 1, tl.sum(weight, axis=0))


@triton.jit
def _dense_kd_grad_kernel(
    s_ptr, t_ptr, g_ptr, scale_ptr, R, A, H, W, D, inv_t,
    s_b, s_a, s_h, s_w, s_d, t_b, t_a, t_h, t_w, t_d, g_b, g_a, g_h, g_w, g_d,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    r, live, s_row, t_row, obj = _rows(t_ptr, R, A, H, W, s_b, s_a, s_h, s_w, t_b, t_a, t_h, t_w, t_d, BLOCK_R)
    g_row = _row_offsets(r, A, H, W, g_b, g_a, g_h, g_w)
    weight = tl.load(scale_ptr) * obj  # scale: T / W times the incoming gradient
    for c0 in range(0, D, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m = live[:, None] & (c < D)[None, :]
        cls = m & (c >= 5)[None, :]
        s = tl.load(s_ptr + s_row[:, None] + c[None, :].to(tl.int64) * s_d, mask=cls, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + t_row[:, None] + c[None, :].to(tl.int64) * t_d, mask=cls, other=0.0).to(tl.float32)
        g = weight[:, None] * (1.0 / (1.0 + tl.exp(-s * inv_t)) - 1.0 / (1.0 + tl.exp(-t * inv_t)))
        g = tl.where(cls, g, 0.0)
        tl.store(g_ptr + g_row[:, None] + c[None, :].to(tl.int64) * g_d, g.to(g_ptr.dtype.element_ty), mask=m)


def _blocks(D: int) -> tuple[int, int]:
    block_c = next_pow2_capped(D, 128)
    return max(2048 // block_c, 16), block_c


def dense_kd_sums(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """(2,) fp32 over one head map: Σ_rows w·Σ_c KL_c and Σ_rows w, w = σ(teacher objectness)."""
    check_float(s, "student")
    check_float(t, "teacher")
    B, A, H, W, D = s.shape
    R = B * A * H * W
    block_r, block_c = _blocks(D)
    grid = (triton.cdiv(R, block_r),)
    part = torch.empty((grid[0], 2), device=s.device, dtype=torch.float32)
    _dense_kd_kernel[grid](s, t, part, R, A, H, W, D, 1.0 / temperature, *s.stride(), *t.stride(),
                           BLOCK_R=block_r, BLOCK_C=block_c)
    return part.sum(0)


def dense_kd_grad(s: torch.Tensor, t: torch.Tensor, scale: torch.Tensor, temperature: float) -> torch.Tensor:
    """The student map's gradient; ``scale`` (a device scalar) is T·g/W, g the incoming gradient."""
    B, A, H, W, D = s.shape
    R = B * A * H * W
    g = torch.empty_like(s)
    block_r, block_c = _blocks(D)
    _dense_kd_grad_kernel[(triton.cdiv(R, block_r),)](
        s, t, g, scale.float().reshape(1).contiguous(), R, A, H, W, D, 1.0 / temperature, *s.stride(), *t.stride(),
        *g.stride(), BLOCK_R=block_r, BLOCK_C=block_c)
    return g
