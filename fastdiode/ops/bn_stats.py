"""BN-statistics loss of one BN input (method.md §2.1).

r = alpha_mean * ||mean(a) - running_mean||_p + alpha_var * ||var(a) - running_var||_p, with per-channel mean
and biased variance over (N, *spatial), accumulated in fp32 and shifted by running_mean (the subtraction
E[(a-rm)^2] - E[a-rm]^2 cancels little when the batch statistics are near the running ones).

The fused path splits the loss in two: :class:`BNMoments` reduces the activation to two C-vectors (one read,
no activation-sized temporary) and the norms are plain autograd on those vectors. Its backward is the closed
form dL/da = g_mu/M + (2 g_var/M) * (a - mu): one read of a, one write of the gradient. Both halves exist as
Triton kernels and as torch code. On CPU ``bn_stat_loss`` compiles the whole loss instead (the shifted sums and
the norms, its backward by inductor): it measured faster there than the two compiled halves (``make bench``).
"""
from __future__ import annotations

import torch

from fastdiode.ops.tensor_checks import require_float, require_rank, require_same_device, require_vector, upcast
from fastdiode.runtime.backend import compiled, resolve_backend


def _reduce_dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def loss_from_moments(dmean, var, running_var, p, alpha_mean, alpha_var) -> torch.Tensor:
    return alpha_mean * torch.linalg.vector_norm(dmean, p) + alpha_var * torch.linalg.vector_norm(
        var - running_var.to(var.dtype), p
    )


def _shifted_moments(x: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean(x) - shift, biased var(x)) of x (N, C, *spatial), accumulated in fp32 or fp64."""
    a = upcast(x)
    view = (1, -1) + (1,) * (x.dim() - 2)
    var, dmean = torch.var_mean(a - shift.to(a.dtype).view(view), dim=_reduce_dims(x), correction=0)
    return dmean, var


def shifted_moment_sums(x: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused halves' moments: the same values as :func:`_shifted_moments` from one pass of shifted sums
    and sums of squares (what the Triton kernel does); inductor fuses them into one loop, where var_mean's
    Welford update costs twice the time on CPU."""
    a = upcast(x)
    view = (1, -1) + (1,) * (x.dim() - 2)
    d = a - shift.to(a.dtype).view(view)
    count = x.numel() // x.shape[1]
    dmean = d.sum(_reduce_dims(x)) / count
    return dmean, ((d * d).sum(_reduce_dims(x)) / count - dmean * dmean).clamp_min(0.0)


def bn_stat_loss_reference(
    x: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    p: float = 2,
    alpha_mean: float = 1.0,
    alpha_var: float = 1.0,
) -> torch.Tensor:
    """The specification in plain torch (autograd gives the gradient)."""
    dmean, var = _shifted_moments(x, running_mean)
    return loss_from_moments(dmean, var, running_var, p, alpha_mean, alpha_var)


def _affine_grad_torch(x: torch.Tensor, gm: torch.Tensor, beta: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """dx = gm[c] + beta[c] * (x - mu[c]) for x (N, C, S), in x's dtype."""
    v = lambda t: t[None, :, None]  # noqa: E731
    return (v(gm) + v(beta) * (upcast(x) - v(mu))).to(x.dtype)


def _loss_torch(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, p: float,
                alpha_mean: float, alpha_var: float) -> torch.Tensor:
    dmean, var = shifted_moment_sums(x, running_mean)
    return loss_from_moments(dmean, var, running_var, p, alpha_mean, alpha_var)


_loss_compiled = compiled(_loss_torch, dynamic=None)
_moments_compiled = compiled(shifted_moment_sums)
_affine_grad_compiled = compiled(_affine_grad_torch)


@torch.library.custom_op("fastdiode::bn_moments", mutates_args=())
def _moments_triton(x: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from fastdiode.kernels.bn_stats import moments

    return moments(x, shift)


@_moments_triton.register_fake
def _(x: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = x.shape[1]
    return x.new_empty(c, dtype=torch.float32), x.new_empty(c, dtype=torch.float32)


@torch.library.custom_op("fastdiode::bn_moments_grad", mutates_args=())
def _affine_grad_triton(x: torch.Tensor, gm: torch.Tensor, beta: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    from fastdiode.kernels.bn_stats import affine_grad

    return affine_grad(x, gm, beta, mu)


@_affine_grad_triton.register_fake
def _(x: torch.Tensor, gm: torch.Tensor, beta: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class BNMoments(torch.autograd.Function):
    """(mean(x) - shift, var(x)) per channel of x (N, C, S), fp32; closed-form backward.
    ``use_triton`` picks the Triton kernels or the compiled torch halves."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, shift: torch.Tensor, use_triton: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dmean, var = (_moments_triton if use_triton else _moments_compiled)(x, shift)
        ctx.use_triton = use_triton
        ctx.save_for_backward(x, shift, dmean)
        return dmean, var

    @staticmethod
    def backward(ctx, g_mean: torch.Tensor | None, g_var: torch.Tensor | None):
        x, shift, dmean = ctx.saved_tensors
        count = x.shape[0] * x.shape[2]
        g_mean = torch.zeros_like(dmean) if g_mean is None else g_mean
        g_var = torch.zeros_like(dmean) if g_var is None else g_var
        mu = shift.to(dmean.dtype) + dmean
        grad = _affine_grad_triton if ctx.use_triton else _affine_grad_compiled
        return grad(x, g_mean / count, 2.0 * g_var / count, mu), None, None


def as_ncs(x: torch.Tensor) -> torch.Tensor | None:
    """View x (N, C, *spatial) as (N, C, S) without copying; None when the spatial strides do not merge."""
    n, c = x.shape[:2]
    if x.dim() == 2:
        return x.unsqueeze(2)
    try:
        return x.view(n, c, -1)
    except RuntimeError:
        return None


def check_bn_inputs(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, p: float) -> None:
    require_float(x, "x")
    require_rank(x, "x", (2, 3, 4, 5), "(N, C, *spatial)")
    c = x.shape[1]
    require_vector(running_mean, "running_mean", c, "one entry per channel of x")
    require_vector(running_var, "running_var", c, "one entry per channel of x")
    require_same_device(running_mean, "running_mean", x, "x")
    require_same_device(running_var, "running_var", x, "x")
    if not p > 0:
        raise ValueError(f"p: expected a positive norm order, got {p}")


def bn_stat_loss(
    x: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    p: float = 2,
    alpha_mean: float = 1.0,
    alpha_var: float = 1.0,
    backend: str | None = None,
) -> torch.Tensor:
    """BN-statistics loss r_l of one BN input x (N, C, *spatial): a 0-dim fp32 tensor with gradient in x.

    Any float dtype and layout (NCHW or channels_last); statistics accumulate in fp32; no host sync.
    """
    check_bn_inputs(x, running_mean, running_var, p)
    choice = resolve_backend("bn_stat_loss", backend, x)
    x3 = as_ncs(x)
    if choice == "reference" or x3 is None:
        return bn_stat_loss_reference(x, running_mean, running_var, p, alpha_mean, alpha_var)
    if choice == "torch":
        return _loss_compiled(x3, running_mean, running_var, float(p), float(alpha_mean), float(alpha_var))
    dmean, var = BNMoments.apply(x3, running_mean, True)
    return loss_from_moments(dmean, var, running_var, p, alpha_mean, alpha_var)
