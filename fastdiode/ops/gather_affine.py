"""The image half of DIODE's augmentation as one op (method.md §3): per-image roll-jitter, horizontal flip,
brightness/contrast affine and random-erase mask, all parameters given as tensors.

    out[n, c, h, w] = keep[n, h, w] * (gain[n] * x[n, c, (h - sy) mod H, src_w] + bias[n])
    src_w = (W - 1 - w - sx) mod W when flip[n] else (w - sx) mod W
    keep  = 0 inside erase[n] = (y0, x0, y1, x1), a half-open rectangle (empty when y1 <= y0)

The map is a permutation per image, so the fused backward (the adjoint) is a gather through the inverse
permutation — no scatter, no atomics. On CUDA it is one Triton kernel each way, with the parameters read on
the device. On CPU, where reading the parameters costs no device sync, the torch half writes the
permutation as four block copies carrying the affine (memcpy speed, which a per-element gather is far
from), then zeroes the erase rectangles in place.
"""
from __future__ import annotations

import torch

from fastdiode.ops.tensor_checks import require_float, require_rank, upcast
from fastdiode.runtime.backend import compiled, resolve_backend


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
    y = upcast(y.gather(3, cols[:, None, None, :].expand(b, c, h, w)))
    y = y * gain.to(y.dtype).view(b, 1, 1, 1) + bias.to(y.dtype).view(b, 1, 1, 1)
    return torch.where(_erase_keep(erase, h, w), y, 0.0).to(x.dtype)


def _roll_affine_into(out: torch.Tensor, x: torch.Tensor, dy: int, dx: int, gain: torch.Tensor,
                      bias: torch.Tensor | None) -> None:
    """out = gain * roll(x, (dy, dx)) + bias as four block writes (dy, dx in [0, H), [0, W)): the affine rides
    on the copy, and torch.roll is avoided (it takes a slow decomposed path once torch._dynamo is imported)."""
    h, w = x.shape[-2:]
    for (oy, sy), (ox, sx) in (
        ((slice(dy, h), slice(0, h - dy)), (slice(dx, w), slice(0, w - dx))),
        ((slice(dy, h), slice(0, h - dy)), (slice(0, dx), slice(w - dx, w))),
        ((slice(0, dy), slice(h - dy, h)), (slice(dx, w), slice(0, w - dx))),
        ((slice(0, dy), slice(h - dy, h)), (slice(0, dx), slice(w - dx, w))),
    ):
        dst, src = out[..., oy, ox], x[..., sy, sx]
        if dst.numel():
            if bias is None:
                torch.mul(src, gain, out=dst)
            else:
                torch.addcmul(bias, src, gain, out=dst)


def _permute_affine_into(out, x, dy: int, dx: int, flip: bool, inverse: bool, gain, bias) -> None:
    """out = gain * P(x) + bias, or gain * P^-1(x), for P = flip, then roll. A flip turns a horizontal roll
    into its negative, so with a flip P = roll(., (dy, -dx)) after flip and P^-1 = roll(., (-dy, -dx)) after
    flip."""
    h, w = x.shape[-2:]
    sy, sx = (-dy, -dx) if inverse else (dy, -dx if flip else dx)
    _roll_affine_into(out, x.flip(3) if flip else x, sy % h, sx % w, gain, bias)


def _wrapped(start: int, length: int, size: int) -> list[tuple[int, int]]:
    """The half-open intervals covering ``length`` positions from ``start`` modulo ``size``."""
    if start + length <= size:
        return [(start, start + length)]
    return [(start, size), (0, start + length - size)]


def _source_rects(rect, dy, dx, flip, h, w) -> list[tuple[int, int, int, int]]:
    """The source pixels whose output position lies in the erase rectangle (up to four when it wraps)."""
    y0, x0, y1, x1 = rect
    col_start = (w - x1 - dx) % w if flip else (x0 - dx) % w
    return [(ra, ca, rb, cb) for ra, rb in _wrapped((y0 - dy) % h, y1 - y0, h)
            for ca, cb in _wrapped(col_start, x1 - x0, w)]


def _gather_host(x, shift_y, shift_x, flip, gain, bias, erase, adjoint: bool) -> torch.Tensor:
    """The op (or its adjoint) on CPU tensors, with the parameters read as Python numbers: one pass writing
    a fresh output (a flip adds one copy), then the erase rectangles zeroed in place."""
    b, _, h, w = x.shape
    moves = list(zip(shift_y.tolist(), shift_x.tolist(), flip.tolist()))
    gain4 = gain.to(x.dtype).view(b, 1, 1, 1)
    bias4 = None if adjoint else bias.to(x.dtype).view(b, 1, 1, 1)
    out = torch.empty_like(x)
    if all(m == moves[0] for m in moves):
        _permute_affine_into(out, x, *moves[0], adjoint, gain4, bias4)
    else:
        for i, m in enumerate(moves):
            one = slice(i, i + 1)
            _permute_affine_into(out[one], x[one], *m, adjoint, gain4[one], None if adjoint else bias4[one])
    for i, (y0, x0, y1, x1) in enumerate(erase.tolist()):
        rect = (max(y0, 0), max(x0, 0), min(y1, h), min(x1, w))
        if rect[2] > rect[0] and rect[3] > rect[1]:
            for ya, xa, yb, xb in _source_rects(rect, *moves[i], h, w) if adjoint else [rect]:
                out.select(0, i).narrow(1, ya, yb - ya).narrow(2, xa, xb - xa).zero_()
    return out


_reference_compiled = compiled(gather_affine_mask_reference)


@torch.library.custom_op("fastdiode::gather_affine_mask", mutates_args=())
def _gather_triton(
    x: torch.Tensor,
    shift_y: torch.Tensor,
    shift_x: torch.Tensor,
    flip: torch.Tensor,
    gain: torch.Tensor,
    bias: torch.Tensor,
    erase: torch.Tensor,
    adjoint: bool,
) -> torch.Tensor:
    from fastdiode.kernels.gather_affine import gather_affine_mask as launch

    return launch(x, shift_y, shift_x, flip, gain, bias, erase, adjoint)


@_gather_triton.register_fake
def _(x, shift_y, shift_x, flip, gain, bias, erase, adjoint):
    return torch.empty_like(x)


class GatherAffineMask(torch.autograd.Function):
    """The fused augmentation; backward is the same op in adjoint mode. ``use_triton`` picks the Triton
    kernel or the CPU host path."""

    @staticmethod
    def forward(ctx, x, shift_y, shift_x, flip, gain, bias, erase, use_triton: bool):
        ctx.use_triton = use_triton
        ctx.save_for_backward(shift_y, shift_x, flip, gain, bias, erase)
        op = _gather_triton if use_triton else _gather_host
        return op(x, shift_y, shift_x, flip, gain, bias, erase, False)

    @staticmethod
    def backward(ctx, grad):
        params = ctx.saved_tensors
        op = _gather_triton if ctx.use_triton else _gather_host
        return op(grad, *params, True), None, None, None, None, None, None, None


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
    gain/bias (B,) float, erase (B, 4) int rectangles. Differentiable in x; keeps x's dtype."""
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
    if choice == "reference":
        return gather_affine_mask_reference(x, shift_y, shift_x, flip, gain, bias, erase)
    if choice == "torch" and x.device.type != "cpu":
        return _reference_compiled(x, shift_y, shift_x, flip, gain, bias, erase)
    return GatherAffineMask.apply(x, shift_y % h, shift_x % w, flip, gain, bias, erase, choice == "triton")
