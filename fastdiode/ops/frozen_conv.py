"""Convolution with frozen weights whose backward keeps nothing of the input.

Autograd's convolution saves its input for the weight gradient even when the weights are frozen; in DIODE the
teacher is frozen and only the image needs a gradient, so every block's input would be held until backward
for nothing. :func:`frozen_conv2d` saves the weight alone and computes the input gradient from the output
gradient (``aten.convolution_backward`` with only the input gradient requested, as ``torch.nn.grad`` does),
so a Conv-BN-activation block holds one activation for backward instead of two.
"""
from __future__ import annotations

import torch
from torch import nn


class FrozenConv2d(torch.autograd.Function):
    """conv2d(x, weight, bias) with a gradient for x only. Under autocast the weight is cast once, here, and
    that copy is what backward uses (as autocast's own conv would save it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple,
                padding: tuple, dilation: tuple, groups: int) -> torch.Tensor:
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        weight = weight.to(dtype)
        ctx.save_for_backward(weight)
        ctx.conf = (x.shape, x.stride(), x.dtype, stride, padding, dilation, groups)
        with torch.autocast(device, enabled=False):
            return nn.functional.conv2d(x.to(dtype), weight, None if bias is None else bias.to(dtype), stride,
                                        padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        shape, strides, dtype, stride, padding, dilation, groups = ctx.conf
        # Only the input's shape and layout are read. An unwritten tensor with its strides keeps oneDNN on its
        # fast path on CPU; on CUDA a zero-stride view avoids even a transient allocation.
        grad = grad.to(weight.dtype)
        stub = (grad.new_empty(1).expand(shape) if grad.is_cuda
                else torch.empty_strided(shape, strides, dtype=grad.dtype, device=grad.device))
        dx = torch.ops.aten.convolution_backward(grad, stub, weight, None, stride, padding, dilation, False,
                                                 [0, 0], groups, (True, False, False))[0]
        return dx.to(dtype), None, None, None, None, None, None


def frozen_conv2d(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a conv whose parameters do not require grad: same output and input gradient, no saved
    input. Zero (``padding_mode='zeros'``) padding only."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"frozen_conv2d: expected numeric zero padding, got padding={conv.padding!r}, "
                         f"padding_mode={conv.padding_mode!r}")
    return FrozenConv2d.apply(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
