"""ReviewKD's hierarchical context loss: per feature plane of d = F_s - F_t (N, C, H, W), any strides.

Forward: one program per (n, c) plane reads the pair once and writes the plane's sum of d² and, for each pooled
size k of the level (up to three, e.g. 4, 2, 1), the sum of d over every adaptive-pooling bin (bin i of k covers
rows floor(i·H/k) .. ceil((i+1)·H/k); bins overlap where k does not divide H). Backward: one pass; each element
gathers dL/dd = a·d + Σ_b c_b·[element in bin b] from per-plane coefficients, and writes the student's gradient
(and the teacher's, its negative, when asked).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import check_float, next_pow2_capped


@triton.jit
def _bin_mask(h, w, H, W, i, j, k: tl.constexpr):
    r0 = (i * H) // k
    r1 = ((i + 1) * H + k - 1) // k
    c0 = (j * W) // k
    c1 = ((j + 1) * W + k - 1) // k
    return (h >= r0) & (h < r1) & (w >= c0) & (w < c1)


@triton.jit
def _tile(s_ptr, t_ptr, n, c, h0, w0, H, W, s_n, s_c, s_h, s_w, t_n, t_c, t_h, t_w,
          BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Rows, columns, mask and (F_s, F_t) in fp32 of the tile at (h0, w0) of plane (n, c)."""
    h = (h0 + tl.arange(0, BLOCK_H))[:, None]
    w = (w0 + tl.arange(0, BLOCK_W))[None, :]
    m = (h < H) & (w < W)
    hs, ws = h.to(tl.int64), w.to(tl.int64)
    s = tl.load(s_ptr + n * s_n + c * s_c + hs * s_h + ws * s_w, mask=m, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + n * t_n + c * t_c + hs * t_h + ws * t_w, mask=m, other=0.0).to(tl.float32)
    return h, w, m, s, t


@triton.jit
def _hcl_sums_kernel(
    s_ptr, t_ptr, out_ptr, C, H, W, s_n, s_c, s_h, s_w, t_n, t_c, t_h, t_w,
    K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, NB: tl.constexpr, NBP: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    plane = tl.program_id(0)
    n = (plane // C).to(tl.int64)
    c = (plane % C).to(tl.int64)
    idx = tl.arange(0, NBP)
    acc = tl.zeros([NBP], dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        for w0 in range(0, W, BLOCK_W):
            h, w, m, s, t = _tile(s_ptr, t_ptr, n, c, h0, w0, H, W, s_n, s_c, s_h, s_w, t_n, t_c, t_h, t_w,
                                  BLOCK_H, BLOCK_W)
            d = s - t
            acc += tl.where(idx == 0, tl.sum(tl.sum(d * d, axis=1), axis=0), 0.0)
            for i in tl.static_range(K0):
                for j in tl.static_range(K0):
                    part = tl.sum(tl.sum(tl.where(_bin_mask(h, w, H, W, i, j, K0), d, 0.0), axis=1), axis=0)
                    acc += tl.where(idx == 1 + i * K0 + j, part, 0.0)
            for i in tl.static_range(K1):
                for j in tl.static_range(K1):
                    part = tl.sum(tl.sum(tl.where(_bin_mask(h, w, H, W, i, j, K1), d, 0.0), axis=1), axis=0)
                    acc += tl.where(idx == 1 + K0 * K0 + i * K1 + j, part, 0.0)
            for i in tl.static_range(K2):
                for j in tl.static_range(K2):
                    part = tl.sum(tl.sum(tl.where(_bin_mask(h, w, H, W, i, j, K2), d, 0.0), axis=1), axis=0)
                    acc += tl.where(idx == 1 + K0 * K0 + K1 * K1 + i * K2 + j, part, 0.0)
    tl.store(out_ptr + plane.to(tl.int64) * NB + idx, acc, mask=idx < NB)


@triton.jit
def _hcl_grad_kernel(
    s_ptr, t_ptr, coef_ptr, gs_ptr, gt_ptr, C, H, W, s_n, s_c, s_h, s_w, t_n, t_c, t_h, t_w,
    g_n, g_c, g_h, g_w, u_n, u_c, u_h, u_w,
    K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, NB: tl.constexpr, WRITE_T: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    plane = tl.program_id(0)
    n = (plane // C).to(tl.int64)
    c = (plane % C).to(tl.int64)
    coef = coef_ptr + plane.to(tl.int64) * NB
    a = tl.load(coef)
    for h0 in range(0, H, BLOCK_H):
        for w0 in range(0, W, BLOCK_W):
            h, w, m, s, t = _tile(s_ptr, t_ptr, n, c, h0, w0, H, W, s_n, s_c, s_h, s_w, t_n, t_c, t_h, t_w,
                                  BLOCK_H, BLOCK_W)
            hs, ws = h.to(tl.int64), w.to(tl.int64)
            g = a * (s - t)
            for i in tl.static_range(K0):
                for j in tl.static_range(K0):
                    g += tl.where(_bin_mask(h, w, H, W, i, j, K0), tl.load(coef + 1 + i * K0 + j), 0.0)
            for i in tl.static_range(K1):
                for j in tl.static_range(K1):
                    g += tl.where(_bin_mask(h, w, H, W, i, j, K1), tl.load(coef + 1 + K0 * K0 + i * K1 + j), 0.0)
            for i in tl.static_range(K2):
                for j in tl.static_range(K2):
                    g += tl.where(_bin_mask(h, w, H, W, i, j, K2),
                                  tl.load(coef + 1 + K0 * K0 + K1 * K1 + i * K2 + j), 0.0)
            tl.store(gs_ptr + n * g_n + c * g_c + hs * g_h + ws * g_w, g.to(gs_ptr.dtype.element_ty), mask=m)
            if WRITE_T:
                tl.store(gt_ptr + n * u_n + c * u_c + hs * u_h + ws * u_w, (-g).to(gt_ptr.dtype.element_ty), mask=m)


def _sizes(sizes: list[int]) -> tuple[int, int, int, int]:
    ks = (list(sizes) + [0, 0, 0])[:3]
    return ks[0], ks[1], ks[2], 1 + sum(k * k for k in sizes)


def _blocks(H: int, W: int) -> tuple[int, int]:
    return next_pow2_capped(H, 64), next_pow2_capped(W, 64)


def hcl_sums(s: torch.Tensor, t: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """(N·C, 1 + Σk²) fp32 per plane: sum of d² then, per pooled size k in ``sizes`` (at most three), the sum
    of d over each of its k×k adaptive bins (row-major)."""
    check_float(s, "student")
    check_float(t, "teacher")
    N, C, H, W = s.shape
    k0, k1, k2, nb = _sizes(sizes)
    out = torch.empty((N * C, nb), device=s.device, dtype=torch.float32)
    bh, bw = _blocks(H, W)
    _hcl_sums_kernel[(N * C,)](s, t, out, C, H, W, *s.stride(), *t.stride(), K0=k0, K1=k1, K2=k2, NB=nb,
                               NBP=triton.next_power_of_2(nb), BLOCK_H=bh, BLOCK_W=bw)
    return out


def hcl_grad(s: torch.Tensor, t: torch.Tensor, coef: torch.Tensor, sizes: list[int],
             write_teacher: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dL/dF_s, dL/dF_t or None) for per-plane coefficients ``coef`` (N·C, 1 + Σk²): a, then c_b per bin."""
    N, C, H, W = s.shape
    k0, k1, k2, nb = _sizes(sizes)
    gs = torch.empty_like(s)
    gt = torch.empty_like(t) if write_teacher else gs
    bh, bw = _blocks(H, W)
    _hcl_grad_kernel[(N * C,)](s, t, coef.float().contiguous(), gs, gt, C, H, W, *s.stride(), *t.stride(),
                               *gs.stride(), *gt.stride(), K0=k0, K1=k1, K2=k2, NB=nb, WRITE_T=write_teacher,
                               BLOCK_H=bh, BLOCK_W=bw)
    return gs, (gt if write_teacher else None)
