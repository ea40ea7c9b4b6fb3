"""LSQ fake quantization (learned step size quantization, Esser et al., ICLR 2020; method.md §12) as one op.

    y = clamp(round(x / s), qmin, qmax) · s

with the straight-through gradient for x (1 inside [qmin, qmax] · s, 0 outside) and LSQ's gradient for the step
size s, scaled by ``grad_scale`` (LSQ's g = 1 / sqrt(N · Q_P)):

    dL/ds = g · Σ dL/dy · (round(x/s) − x/s inside the range, qmin below it, qmax above it)

summed over the elements a scale covers. ``scale`` has one element (per tensor) or one per index of dim 0
(per channel: a weight's output channels). Rounding is half to even, as torch.round.

Unfused, autograd keeps x/s, the clamp mask and the rounding for backward and reduces the scale's gradient in a
separate pass. Fused, the forward reads x once and writes y; the backward reads x and dL/dy once and writes dL/dx
and the scale's partial sums. ``triton``: two kernels (:mod:`fastdiode.kernels.lsq`); ``torch``: the same closed
forms compiled by inductor; ``reference``: the written-out autograd form (the specification).
"""
from __future__ import annotations

import torch

from fastdiode.ops.tensor_checks import require_float
from fastdiode.runtime.backend import compiled, resolve_backend


def _grad_scaled(t: torch.Tensor, g: float) -> torch.Tensor:
    """``t`` in value, with its gradient multiplied by ``g``."""
    return (t - t * g).detach() + t * g


def _broadcast(scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """scale (1,) or (C,) shaped to broadcast over x along dim 0."""
    return scale.reshape(-1, *([1] * (x.dim() - 1))) if scale.numel() > 1 else scale.reshape(())


def lsq_fake_quant_reference(x: torch.Tensor, scale: torch.Tensor, qmin: float, qmax: float,
                             grad_scale: float = 1.0) -> torch.Tensor:
    """The specification, as LSQ's code writes it: a gradient-scaled step, clamp, round with a straight-through
    estimator, rescale; autograd gives both gradients."""
    s = _broadcast(_grad_scaled(scale.float(), grad_scale), x)
    v = torch.clamp(x.float() / s, qmin, qmax)
    v = v + (torch.round(v) - v).detach()
    return (v * s).to(x.dtype)


def _forward_torch(x: torch.Tensor, s: torch.Tensor, qmin: float, qmax: float) -> torch.Tensor:
    return (torch.clamp(torch.round(x.float() / s), qmin, qmax) * s).to(x.dtype)


def _backward_torch(x: torch.Tensor, g: torch.Tensor, s: torch.Tensor, qmin: float,
                    qmax: float) -> tuple[torch.Tensor, torch.Tensor]:
    v = x.float() / s
    inside = (v >= qmin) & (v <= qmax)
    dx = torch.where(inside, g.float(), 0.0).to(x.dtype)
    ds = torch.where(inside, torch.round(v) - v, torch.where(v < qmin, qmin, qmax)) * g.float()
    per_channel = s.dim() > 0
    return dx, ds.flatten(1).sum(1) if per_channel else ds.sum().reshape(1)


_forward_compiled = compiled(_forward_torch)
_backward_compiled = compiled(_backward_torch)


def _rows(x: torch.Tensor, channels: int) -> torch.Tensor | None:
    """x viewed as (channels, M), each row dense (NCHW, or channels_last whose dim 0 is outermost); None when the
    strides do not allow it."""
    n = x.numel()
    dense = x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
    if not dense or n == 0:
        return None
    if channels == 1:
        return torch.as_strided(x, (1, n), (n, 1))
    return torch.as_strided(x, (channels, n // channels), (x.stride(0), 1)) if x.stride(0) == n // channels else None


@torch.library.custom_op("fastdiode::lsq_forward", mutates_args=())
def _lsq_forward_triton(x: torch.Tensor, scale: torch.Tensor, qmin: float, qmax: float) -> torch.Tensor:
    from fastdiode.kernels.lsq import lsq_forward

    y = torch.empty_like(x)  # x's strides: the same row view
    c = scale.numel()
    lsq_forward(_rows(x, c), scale.float().contiguous(), qmin, qmax, _rows(y, c))
    return y


@_lsq_forward_triton.register_fake
def _(x, scale, qmin, qmax):
    return torch.empty_like(x)


@torch.library.custom_op("fastdiode::lsq_backward", mutates_args=())
def _lsq_backward_triton(x: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor, qmin: float,
                         qmax: float) -> tuple[torch.Tensor, torch.Tensor]:
    from fastdiode.kernels.lsq import lsq_backward

    c = scale.numel()
    dx = torch.empty_like(x)
    ds = lsq_backward(_rows(x, c), _rows(grad, c), scale.float().contiguous(), qmin, qmax, _rows(dx, c))
    return dx, ds


@_lsq_backward_triton.register_fake
def _(x, grad, scale, qmin, qmax):
    return torch.empty_like(x), scale.new_empty(scale.numel(), dtype=torch.float32)


class LSQFakeQuant(torch.autograd.Function):
    """The fused op: ``use_triton`` picks the kernels or the compiled torch halves."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, qmin: float, qmax: float, grad_scale: float,
                use_triton: bool) -> torch.Tensor:
        x, scale = x.detach(), scale.detach()  # plain tensors: inductor keeps a parameter's shape static
        ctx.save_for_backward(x, scale)
        ctx.conf = (qmin, qmax, grad_scale, use_triton)
        if use_triton:
            return _lsq_forward_triton(x, scale, qmin, qmax)
        return _forward_compiled(x, _broadcast(scale.float(), x), qmin, qmax)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, scale = ctx.saved_tensors
        qmin, qmax, grad_scale, use_triton = ctx.conf
        if use_triton:
            dx, ds = _lsq_backward_triton(x, grad.contiguous(memory_format=_format(x)), scale, qmin, qmax)
        else:
            dx, ds = _backward_compiled(x, grad, _broadcast(scale.float(), x), qmin, qmax)
        return dx, (ds * grad_scale).reshape(scale.shape).to(scale.dtype), None, None, None, None


def _format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and not x.is_contiguous() and \
        x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def lsq_fake_quant(x: torch.Tensor, scale: torch.Tensor, qmin: float, qmax: float, grad_scale: float = 1.0,
                   backend: str | None = None) -> torch.Tensor:
    """LSQ fake quantization of ``x`` with step ``scale`` (one element, or one per index of dim 0) to the integer
    range [qmin, qmax] (module docstring); y has x's dtype and layout. Gradients flow to x and to the scale."""
    require_float(x, "x")
    require_float(scale, "scale")
    if scale.numel() not in (1, x.shape[0]) or scale.dim() > 1:
        raise ValueError(f"scale: expected one element or one per index of dim 0 ({x.shape[0]}), got shape "
                         f"{tuple(scale.shape)}")
    if not qmin < qmax:
        raise ValueError(f"qmin, qmax: expected qmin < qmax, got {qmin}, {qmax}")
    choice = resolve_backend("lsq_fake_quant", backend, x)
    if choice == "reference":
        return lsq_fake_quant_reference(x, scale, qmin, qmax, grad_scale)
    if choice == "triton" and _rows(x, scale.numel()) is None:
        x = x.contiguous()
    return LSQFakeQuant.apply(x, scale, float(qmin), float(qmax), float(grad_scale), choice == "triton")
