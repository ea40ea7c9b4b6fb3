"""A Conv-BN-activation block's eval-mode BatchNorm and activation fused with the BN-statistics loss of the BN
input (method.md §2.1): the fast path of :class:`fastdiode.losses.BNStatLoss` on Darknet's Conv-BN-LeakyReLU and
ultralytics' Conv-BN-SiLU blocks.

Unfused, a block's conv output is read by the BN, the activation and the statistics in the forward pass and
again by three backward ops whose gradients are then added. Fused, one pass reads x and writes both the
activation y = act(scale * x + bias) (scale and bias fold the eval-mode BN) and the per-channel moments;
one backward pass writes dx = gy * scale * act'(scale * x + bias) + gm[c] + beta[c] * (x - mu[c]). Only x is
saved for backward (the unfused block also saves the BN output). The activation is ``"leaky"`` with negative
slope ``slope`` (1: a linear block, 0: a ReLU) or ``"silu"``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastdiode.ops.bn_stats import (
    as_ncs,
    bn_stat_loss_reference,
    check_bn_inputs,
    loss_from_moments,
    shifted_moment_sums,
)
from fastdiode.ops.tensor_checks import require_float, upcast
from fastdiode.runtime.backend import compiled, resolve_backend

ACTIVATIONS = ("leaky", "silu")


def fused_activation(act: torch.nn.Module) -> tuple[str, float] | None:
    """(activation, slope) of an activation module this op can fuse: a leaky ReLU (identity: slope 1, ReLU: 0)
    or SiLU; None for any other."""
    if isinstance(act, torch.nn.LeakyReLU):
        return "leaky", float(act.negative_slope)
    if isinstance(act, torch.nn.SiLU):
        return "silu", 0.0
    slope = {torch.nn.Identity: 1.0, torch.nn.ReLU: 0.0}.get(type(act))
    return None if slope is None else ("leaky", slope)


def _act(z: torch.Tensor, slope: float, silu: bool) -> torch.Tensor:
    return F.silu(z) if silu else torch.where(z > 0, z, z * slope)


def _act_grad(z: torch.Tensor, slope: float, silu: bool) -> torch.Tensor:
    if silu:
        sig = torch.sigmoid(z)
        return sig * (1 + z * (1 - sig))
    return torch.where(z > 0, 1.0, slope)


def bn_act_stat_loss_reference(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                               weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, slope: float,
                               p: float = 2, alpha_mean: float = 1.0, alpha_var: float = 1.0,
                               activation: str = "leaky") -> tuple[torch.Tensor, torch.Tensor]:
    """(act(eval-mode BN(x)), BN-statistics loss of x) in plain torch (autograd gives the gradient)."""
    z = F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps)
    y = F.silu(z) if activation == "silu" else F.leaky_relu(z, slope)
    return y, bn_stat_loss_reference(x, running_mean, running_var, p, alpha_mean, alpha_var)


def fold_batch_norm(running_mean: torch.Tensor, running_var: torch.Tensor, weight: torch.Tensor | None,
                    bias: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, bias) in fp32 with eval-mode BN(x) = scale * x + bias per channel."""
    scale = torch.rsqrt(running_var.float() + eps)
    if weight is not None:
        scale = scale * weight.float()
    shift = -running_mean.float() * scale
    return scale, shift if bias is None else shift + bias.float()


def _bn_act_moments_torch(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                          slope: float, silu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    v = lambda t: t[None, :, None]  # noqa: E731
    a = upcast(x)
    z = a * v(scale) + v(bias)
    dmean, var = shifted_moment_sums(x, shift)
    return _act(z, slope, silu).to(x.dtype), dmean, var


def _bn_act_grad_torch(x: torch.Tensor, gy: torch.Tensor, gm: torch.Tensor, beta: torch.Tensor, mu: torch.Tensor,
                       scale: torch.Tensor, bias: torch.Tensor, slope: float, silu: bool) -> torch.Tensor:
    v = lambda t: t[None, :, None]  # noqa: E731
    a = upcast(x)
    z = a * v(scale) + v(bias)
    act_grad = upcast(gy) * v(scale) * _act_grad(z, slope, silu)
    return (v(beta) * (a - v(mu)) + v(gm) + act_grad).to(x.dtype)  # x's terms first: dx takes x's layout


_moments_compiled = compiled(_bn_act_moments_torch)
_grad_compiled = compiled(_bn_act_grad_torch)


@torch.library.custom_op("fastdiode::bn_act_moments", mutates_args=())
def _bn_act_moments_triton(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                           slope: float, silu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from fastdiode.kernels.bn_stats import moments

    y = torch.empty_like(x)
    dmean, var = moments(x, shift, act=(y, scale, bias, slope, silu))
    return y, dmean, var


@_bn_act_moments_triton.register_fake
def _(x, shift, scale, bias, slope, silu):
    c = x.shape[1]
    return torch.empty_like(x), x.new_empty(c, dtype=torch.float32), x.new_empty(c, dtype=torch.float32)


@torch.library.custom_op("fastdiode::bn_act_grad", mutates_args=())
def _bn_act_grad_triton(x: torch.Tensor, gy: torch.Tensor, gm: torch.Tensor, beta: torch.Tensor, mu: torch.Tensor,
                        scale: torch.Tensor, bias: torch.Tensor, slope: float, silu: bool) -> torch.Tensor:
    from fastdiode.kernels.bn_stats import affine_grad

    return affine_grad(x, gm, beta, mu, act=(gy, scale, bias, slope, silu))


@_bn_act_grad_triton.register_fake
def _(x, gy, gm, beta, mu, scale, bias, slope, silu):
    return torch.empty_like(x)


class BNActMoments(torch.autograd.Function):
    """(act(scale * x + bias), mean(x) - shift, var(x)) of x (N, C, S) in one pass; one-pass backward to x.
    ``use_triton`` picks the Triton kernels or the compiled torch halves."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, slope: float,
                silu: bool, use_triton: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, dmean, var = (_bn_act_moments_triton if use_triton else _moments_compiled)(x, shift, scale, bias, slope,
                                                                                     silu)
        ctx.slope, ctx.silu, ctx.use_triton = slope, silu, use_triton
        ctx.save_for_backward(x, shift, scale, bias, dmean)
        return y, dmean, var

    @staticmethod
    def backward(ctx, g_y: torch.Tensor | None, g_mean: torch.Tensor | None, g_var: torch.Tensor | None):
        x, shift, scale, bias, dmean = ctx.saved_tensors
        count = x.shape[0] * x.shape[2]
        g_y = torch.zeros_like(x) if g_y is None else g_y
        g_mean = torch.zeros_like(dmean) if g_mean is None else g_mean
        g_var = torch.zeros_like(dmean) if g_var is None else g_var
        mu = shift.to(dmean.dtype) + dmean
        if not ctx.use_triton and (g_y.stride() != x.stride() or g_y.storage_offset()):
            # gy arrives as a slice of a concat's gradient, or in another layout: one layout for the compiled
            # torch half (else inductor recompiles for every stride pattern it meets)
            g_y = torch.empty_like(x).copy_(g_y)
        grad = _bn_act_grad_triton if ctx.use_triton else _grad_compiled
        dx = grad(x, g_y, g_mean / count, 2.0 * g_var / count, mu, scale, bias, ctx.slope, ctx.silu)
        return dx, None, None, None, None, None, None


def bn_act_stat_loss(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                     weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, slope: float,
                     p: float = 2, alpha_mean: float = 1.0, alpha_var: float = 1.0,
                     backend: str | None = None, activation: str = "leaky") -> tuple[torch.Tensor, torch.Tensor]:
    """(act(eval-mode BN(x)), BN-statistics loss r_l of x) for x (N, C, *spatial), act a leaky ReLU of negative
    slope ``slope`` (``activation="leaky"``) or SiLU (``"silu"``, ``slope`` unused); the loss is a 0-dim fp32
    tensor. Gradients flow to x only: the BN parameters are treated as constants (the fused path of a frozen
    teacher), so pass parameters that require grad to the reference instead."""
    check_bn_inputs(x, running_mean, running_var, p)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r}: expected one of {', '.join(ACTIVATIONS)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            require_float(t, name)
    choice = resolve_backend("bn_act_stat_loss", backend, x)
    x3 = as_ncs(x)
    if choice == "reference" or x3 is None:
        return bn_act_stat_loss_reference(x, running_mean, running_var, weight, bias, eps, slope, p, alpha_mean,
                                          alpha_var, activation)
    scale, shift = fold_batch_norm(running_mean, running_var, weight, bias, eps)
    y, dmean, var = BNActMoments.apply(x3, running_mean, scale, shift, float(slope), activation == "silu",
                                       choice == "triton")
    return y.view_as(x), loss_from_moments(dmean, var, running_var, p, alpha_mean, alpha_var)
