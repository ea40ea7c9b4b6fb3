"""Bilinear box crops, pooled in the kernel: one program per (image, box) samples every channel of its crop.

Sample (i, j) of a box (x1, y1, x2, y2) reads pixel x = W·(x1 + (x2 - x1)·(j + ½)/S) - ½ (and y likewise),
bilinearly, zero outside the image (``grid_sample``'s ``align_corners=False``, ``padding_mode='zeros'``). The
S×S samples are tiled as [bins, samples per bin] so the P×P average pool is a row sum of the tile (P = S: no
pool). Backward recomputes the samples: the image gradient goes out by atomic adds (boxes overlap), and the
program's four box-coordinate gradients are reduced in registers and written once (deterministic).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import check_float, next_pow2_capped


@triton.jit
def _samples(box_ptr, bk, b0, s0, S, P, STEP, H, W, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr):
    """Tile [BLOCK_B bins, BLOCK_S samples of a bin]: corner offsets, fractions, masks and t = (j + ½)/S."""
    x1 = tl.load(box_ptr + bk * 4 + 0).to(tl.float32)
    y1 = tl.load(box_ptr + bk * 4 + 1).to(tl.float32)
    x2 = tl.load(box_ptr + bk * 4 + 2).to(tl.float32)
    y2 = tl.load(box_ptr + bk * 4 + 3).to(tl.float32)
    bins = (b0 + tl.arange(0, BLOCK_B))[:, None]
    sam = (s0 + tl.arange(0, BLOCK_S))[None, :]
    live = (bins < P * P) & (sam < STEP * STEP)
    i = (bins // P) * STEP + sam // STEP
    j = (bins % P) * STEP + sam % STEP
    tx = (j.to(tl.float32) + 0.5) / S
    ty = (i.to(tl.float32) + 0.5) / S
    px = W * (x1 + (x2 - x1) * tx) - 0.5
    py = H * (y1 + (y2 - y1) * ty) - 0.5
    fx0 = tl.floor(px)
    fy0 = tl.floor(py)
    fx = px - fx0
    fy = py - fy0
    xa = fx0.to(tl.int32)
    ya = fy0.to(tl.int32)
    xb = xa + 1
    yb = ya + 1
    mxa = (xa >= 0) & (xa < W)
    mxb = (xb >= 0) & (xb < W)
    mya = (ya >= 0) & (ya < H)
    myb = (yb >= 0) & (yb < H)
    return bins, live, tx, ty, fx, fy, xa, xb, ya, yb, mxa, mxb, mya, myb


@triton.jit
def _roi_crop_fwd(img_ptr, box_ptr, valid_ptr, out_ptr, K, C, H, W, S, P, STEP,
                  i_b, i_c, i_h, i_w, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr):
    bk = tl.program_id(0).to(tl.int64)
    b = bk // K
    ok = tl.load(valid_ptr + bk) != 0
    inv = 1.0 / (STEP * STEP)
    for c in range(C):
        base = img_ptr + b * i_b + c * i_c
        for b0 in range(0, P * P, BLOCK_B):
            acc = tl.zeros([BLOCK_B], dtype=tl.float32)
            if ok:
                for s0 in range(0, STEP * STEP, BLOCK_S):
                    bins, live, tx, ty, fx, fy, xa, xb, ya, yb, mxa, mxb, mya, myb = _samples(
                        box_ptr, bk, b0, s0, S, P, STEP, H, W, BLOCK_B, BLOCK_S)
                    v00 = tl.load(base + ya * i_h + xa * i_w, mask=live & mya & mxa, other=0.0).to(tl.float32)
                    v01 = tl.load(base + ya * i_h + xb * i_w, mask=live & mya & mxb, other=0.0).to(tl.float32)
                    v10 = tl.load(base + yb * i_h + xa * i_w, mask=live & myb & mxa, other=0.0).to(tl.float32)
                    v11 = tl.load(base + yb * i_h + xb * i_w, mask=live & myb & mxb, other=0.0).to(tl.float32)
                    v = (1 - fy) * ((1 - fx) * v00 + fx * v01) + fy * ((1 - fx) * v10 + fx * v11)
                    acc += tl.sum(tl.where(live, v, 0.0), axis=1)
            out_bins = b0 + tl.arange(0, BLOCK_B)
            tl.store(out_ptr + (bk * C + c) * P * P + out_bins, acc * inv, mask=out_bins < P * P)


@triton.jit
def _roi_crop_bwd(grad_ptr, img_ptr, box_ptr, valid_ptr, gimg_ptr, gbox_ptr, K, C, H, W, S, P, STEP,
                  i_b, i_c, i_h, i_w, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr):
    bk = tl.program_id(0).to(tl.int64)
    b = bk // K
    ok = tl.load(valid_ptr + bk) != 0
    inv = 1.0 / (STEP * STEP)
    gx1 = tl.zeros([BLOCK_B, BLOCK_S], dtype=tl.float32)
    gx2 = tl.zeros([BLOCK_B, BLOCK_S], dtype=tl.float32)
    gy1 = tl.zeros([BLOCK_B, BLOCK_S], dtype=tl.float32)
    gy2 = tl.zeros([BLOCK_B, BLOCK_S], dtype=tl.float32)
    if ok:
        for c in range(C):
            base = img_ptr + b * i_b + c * i_c
            gbase = gimg_ptr + b * C * H * W + c * H * W  # the fp32 gradient buffer is contiguous
            for b0 in range(0, P * P, BLOCK_B):
                for s0 in range(0, STEP * STEP, BLOCK_S):
                    bins, live, tx, ty, fx, fy, xa, xb, ya, yb, mxa, mxb, mya, myb = _samples(
                        box_ptr, bk, b0, s0, S, P, STEP, H, W, BLOCK_B, BLOCK_S)
                    g = tl.load(grad_ptr + (bk * C + c) * P * P + bins, mask=bins < P * P, other=0.0) * inv
                    g = tl.where(live, g, 0.0)
                    m00, m01, m10, m11 = live & mya & mxa, live & mya & mxb, live & myb & mxa, live & myb & mxb
                    v00 = tl.load(base + ya * i_h + xa * i_w, mask=m00, other=0.0).to(tl.float32)
                    v01 = tl.load(base + ya * i_h + xb * i_w, mask=m01, other=0.0).to(tl.float32)
                    v10 = tl.load(base + yb * i_h + xa * i_w, mask=m10, other=0.0).to(tl.float32)
                    v11 = tl.load(base + yb * i_h + xb * i_w, mask=m11, other=0.0).to(tl.float32)
                    tl.atomic_add(gbase + ya * W + xa, g * (1 - fy) * (1 - fx), mask=m00)
                    tl.atomic_add(gbase + ya * W + xb, g * (1 - fy) * fx, mask=m01)
                    tl.atomic_add(gbase + yb * W + xa, g * fy * (1 - fx), mask=m10)
                    tl.atomic_add(gbase + yb * W + xb, g * fy * fx, mask=m11)
                    dpx = g * ((1 - fy) * (v01 - v00) + fy * (v11 - v10)) * W
                    dpy = g * ((1 - fx) * (v10 - v00) + fx * (v11 - v01)) * H
                    gx1 += dpx * (1 - tx)
                    gx2 += dpx * tx
                    gy1 += dpy * (1 - ty)
                    gy2 += dpy * ty
    tl.store(gbox_ptr + bk * 4 + 0, tl.sum(tl.sum(gx1, axis=1), axis=0))
    tl.store(gbox_ptr + bk * 4 + 1, tl.sum(tl.sum(gy1, axis=1), axis=0))
    tl.store(gbox_ptr + bk * 4 + 2, tl.sum(tl.sum(gx2, axis=1), axis=0))
    tl.store(gbox_ptr + bk * 4 + 3, tl.sum(tl.sum(gy2, axis=1), axis=0))


def _blocks(bins: int, step: int) -> tuple[int, int]:
    block_s = next_pow2_capped(step * step, 256)
    return next_pow2_capped(bins * bins, max(1, 1024 // block_s)), block_s


def roi_crop_forward(images: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, size: int,
                     bins: int) -> torch.Tensor:
    """(B, K, C, P, P) fp32 crops pooled over P = ``bins`` bins of the size×size samples."""
    check_float(images, "images")
    b, c, h, w = images.shape
    k = boxes.shape[1]
    out = torch.empty(b, k, c, bins, bins, device=images.device, dtype=torch.float32)
    if b * k == 0:
        return out
    block_b, block_s = _blocks(bins, size // bins)
    _roi_crop_fwd[(b * k,)](images, boxes.float().contiguous(), valid.to(torch.uint8), out, k, c, h, w, size, bins,
                            size // bins, *images.stride(), BLOCK_B=block_b, BLOCK_S=block_s)
    return out


def roi_crop_backward(grad: torch.Tensor, images: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor,
                      size: int, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dimages, dL/dboxes) in fp32 from dL/dcrops (B, K, C, P, P)."""
    b, c, h, w = images.shape
    k = boxes.shape[1]
    g_images = torch.zeros(b, c, h, w, device=images.device, dtype=torch.float32)
    g_boxes = torch.zeros(b, k, 4, device=images.device, dtype=torch.float32)
    if b * k == 0:
        return g_images, g_boxes
    block_b, block_s = _blocks(bins, size // bins)
    _roi_crop_bwd[(b * k,)](grad.float().contiguous(), images, boxes.float().contiguous(), valid.to(torch.uint8),
                            g_images, g_boxes, k, c, h, w, size, bins, size // bins, *images.stride(),
                            BLOCK_B=block_b, BLOCK_S=block_s)
    return g_images, g_boxes
