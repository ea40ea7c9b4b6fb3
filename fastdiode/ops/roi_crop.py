"""Differentiable box crops (DICOD's localization distillation, method.md §8): an S×S bilinear crop of each box.

A box (x1, y1, x2, y2), normalised to [0, 1], is sampled on the centres of an S×S grid laid over it, with zeros
outside the image (``affine_grid`` + ``grid_sample``, ``align_corners=False``, as DICOD crops): output column j
reads the image at pixel x = W·(x1 + (x2 - x1)·(j + ½)/S) - ½, and the same for rows. Gradients flow to the
image and to the box coordinates.

The sampling is separable: crop = R_y · image · R_xᵀ, with R_x[j, w] = max(0, 1 - |x_j - w|) the bilinear
weights of column j (two non-zeros per row; pixels outside the image simply have no column, which is the zero
padding). The optional average pool over P×P bins (the loss needs 4×4 and 8×8 pooled crops) averages the rows
of R_x and R_y first, so a pooled crop never materialises the S×S one.

* ``reference``: ``affine_grid`` + ``grid_sample`` (+ ``adaptive_avg_pool2d``), per box, as DICOD writes it
  (each box gets its own copy of its image).
* ``torch`` (the CPU path): pooled crops in the separable form (two batched matmuls with the bin-averaged weights,
  compiled by inductor: the S×S samples are never taken one by one); full crops by one ``grid_sample`` per image
  whose output grid stacks all its boxes (no image copies; B·K·S² samples, where the separable form would cost
  B·K·C·H·W·S).
* ``triton``: one launch samples every box of the batch, one program per box, pooled in the kernel; the
  backward recomputes the samples, accumulates the image gradient with atomics (boxes may overlap, so they
  cannot be avoided) and reduces each box's four coordinate gradients in its own program (deterministic).

Padding rows (``valid`` False, by default the boxes with x2 <= x1 or y2 <= y1) give zeros and no gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastdiode.ops.tensor_checks import require_float, require_rank, require_same_device, upcast
from fastdiode.runtime.backend import compiled, resolve_backend


def _check(images: torch.Tensor, boxes: torch.Tensor, size: int, pool: int | None,
           valid: torch.Tensor | None) -> None:
    require_float(images, "images")
    require_rank(images, "images", (4,), "(B, C, H, W)")
    require_float(boxes, "boxes")
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != images.shape[0]:
        raise ValueError(f"boxes: expected a padded ({images.shape[0]}, K, 4) tensor of normalised x1, y1, x2, y2 "
                         f"for {images.shape[0]} images, got {tuple(boxes.shape)}")
    require_same_device(boxes, "boxes", images, "images")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a positive crop size in pixels, got {size!r}")
    if pool is not None and (not isinstance(pool, int) or pool < 1 or size % pool):
        raise ValueError(f"pool: expected a positive divisor of size={size} (the pooled crop's side), got {pool!r}")
    if valid is not None and (valid.shape != boxes.shape[:2] or valid.dtype != torch.bool):
        raise ValueError(f"valid: expected a bool tensor of shape {tuple(boxes.shape[:2])}, got "
                         f"{valid.dtype} {tuple(valid.shape)}")


def _valid(boxes: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is not None:
        return valid
    return (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])


def roi_crop_reference(images: torch.Tensor, boxes: torch.Tensor, size: int, pool: int | None = None,
                       valid: torch.Tensor | None = None) -> torch.Tensor:
    """The specification, as DICOD writes it: a (2, 3) affine matrix per box, ``affine_grid``, ``grid_sample``
    over the box's image, then ``adaptive_avg_pool2d`` to ``pool``. (B, K, C, S, S), or (B, K, C, P, P)."""
    b, k = boxes.shape[:2]
    c, h, w = images.shape[1:]
    images, boxes = upcast(images), upcast(boxes)
    x1, y1, x2, y2 = boxes.unbind(-1)
    zero = torch.zeros_like(x1)
    theta = torch.stack([torch.stack([x2 - x1, zero, x1 + x2 - 1], -1),
                         torch.stack([zero, y2 - y1, y1 + y2 - 1], -1)], -2).reshape(b * k, 2, 3)
    grid = F.affine_grid(theta, [b * k, c, size, size], align_corners=False)
    source = images[:, None].expand(b, k, c, h, w).reshape(b * k, c, h, w)
    crops = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if pool is not None:
        crops = F.adaptive_avg_pool2d(crops, pool)
    crops = crops.reshape(b, k, c, *crops.shape[-2:])
    return crops * _valid(boxes, valid)[..., None, None, None].to(crops.dtype)


def sample_weights(lo: torch.Tensor, hi: torch.Tensor, size: int, length: int, bins: int) -> torch.Tensor:
    """The bilinear weights of the crop's sample positions along one axis, averaged over ``size // bins``
    consecutive samples: (..., bins, length) from box edges ``lo``, ``hi`` (...) normalised to [0, 1]."""
    t = (torch.arange(size, device=lo.device, dtype=lo.dtype) + 0.5) / size
    pos = length * (lo[..., None] + (hi - lo)[..., None] * t) - 0.5
    pixels = torch.arange(length, device=lo.device, dtype=lo.dtype)
    weights = (1.0 - (pos[..., None] - pixels).abs()).clamp_min(0.0)
    return weights.reshape(*lo.shape, bins, size // bins, length).mean(-2)


def _roi_crop_separable(images: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, size: int,
                        bins: int) -> torch.Tensor:
    images, boxes = upcast(images), upcast(boxes)
    h, w = images.shape[-2:]
    x1, y1, x2, y2 = boxes.unbind(-1)
    rx = sample_weights(x1, x2, size, w, bins)  # (B, K, P, W)
    ry = sample_weights(y1, y2, size, h, bins) * valid[..., None, None].to(images.dtype)  # (B, K, P, H)
    rows = torch.einsum("bchw,bkqw->bkchq", images, rx)
    return torch.einsum("bkph,bkchq->bkcpq", ry, rows)


_roi_crop_compiled = compiled(_roi_crop_separable, dynamic=False)


def _roi_crop_stacked(images: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, size: int) -> torch.Tensor:
    """Full crops: one grid_sample per image, the sample grids of its K boxes stacked along the output height."""
    images, boxes = upcast(images), upcast(boxes)
    b, k = boxes.shape[:2]
    t = (torch.arange(size, device=boxes.device, dtype=boxes.dtype) + 0.5) / size
    x1, y1, x2, y2 = boxes.unbind(-1)
    gx = 2 * (x1[..., None] + (x2 - x1)[..., None] * t) - 1  # (B, K, S) in grid_sample's [-1, 1]
    gy = 2 * (y1[..., None] + (y2 - y1)[..., None] * t) - 1
    grid = torch.stack([gx[:, :, None, :].expand(b, k, size, size), gy[:, :, :, None].expand(b, k, size, size)], -1)
    crops = F.grid_sample(images, grid.reshape(b, k * size, size, 2), mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    crops = crops.view(b, -1, k, size, size).transpose(1, 2)
    return crops * valid[..., None, None, None].to(crops.dtype)


@torch.library.custom_op("fastdiode::roi_crop_triton", mutates_args=())
def _roi_crop_triton(images: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, size: int,
                     bins: int) -> torch.Tensor:
    from fastdiode.kernels.roi_crop import roi_crop_forward

    return roi_crop_forward(images, boxes, valid, size, bins)


@_roi_crop_triton.register_fake
def _(images, boxes, valid, size, bins):
    b, k = boxes.shape[:2]
    return images.new_empty(b, k, images.shape[1], bins, bins, dtype=torch.float32)


@torch.library.custom_op("fastdiode::roi_crop_grad_triton", mutates_args=())
def _roi_crop_grad_triton(grad: torch.Tensor, images: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor,
                          size: int, bins: int) -> list[torch.Tensor]:
    from fastdiode.kernels.roi_crop import roi_crop_backward

    return list(roi_crop_backward(grad, images, boxes, valid, size, bins))


@_roi_crop_grad_triton.register_fake
def _(grad, images, boxes, valid, size, bins):
    return [torch.empty_like(images, dtype=torch.float32), torch.empty_like(boxes, dtype=torch.float32)]


class RoICrop(torch.autograd.Function):
    """Box crops over the Triton kernels: gradients to the image and to the boxes."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, size: int,
                bins: int) -> torch.Tensor:
        ctx.save_for_backward(images, boxes, valid)
        ctx.size, ctx.bins = size, bins
        return _roi_crop_triton(images, boxes, valid, size, bins)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        images, boxes, valid = ctx.saved_tensors
        g_images, g_boxes = _roi_crop_grad_triton(grad.contiguous(), images, boxes, valid, ctx.size, ctx.bins)
        return g_images.to(images.dtype), g_boxes.to(boxes.dtype), None, None, None


def roi_crop(images: torch.Tensor, boxes: torch.Tensor, size: int, pool: int | None = None,
             valid: torch.Tensor | None = None, backend: str | None = None) -> torch.Tensor:
    """Bilinear ``size``×``size`` crops of padded boxes (B, K, 4) (normalised x1, y1, x2, y2) from images
    (B, C, H, W): (B, K, C, S, S) in fp32 (fp64 for fp64 input), or (B, K, C, P, P) average-pooled over P×P bins
    with ``pool=P`` (a divisor of S). Differentiable in the images and the boxes; rows that are not ``valid``
    (default: empty boxes) are zeros."""
    _check(images, boxes, size, pool, valid)
    bins = pool or size
    choice = resolve_backend("roi_crop", backend, images)
    if choice == "reference":
        return roi_crop_reference(images, boxes, size, pool, valid)
    valid = _valid(boxes, valid)
    if choice == "triton":
        return RoICrop.apply(images.contiguous(), boxes.contiguous(), valid.contiguous(), size, bins)
    if bins == size:
        return _roi_crop_stacked(images, boxes, valid, size)
    return _roi_crop_compiled(images, boxes, valid, size, bins)
