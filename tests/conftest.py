"""Test setup: Triton kernels run through the CPU interpreter when no CUDA device exists (set before any
`import triton`); fixtures for the device, the kernel backends and per-dtype tolerances."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The torch halves of the fused ops run eagerly in the test grid (compiling each dtype x layout would cost
# minutes); tests marked `slow` turn compilation on through the `compile_on` fixture.
os.environ.setdefault("FASTDIODE_COMPILE", "0")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# (atol, rtol) for comparing a fused op with its reference on the same low-precision input: both accumulate
# in fp32, so values agree closely; gradients are rounded once to the input dtype.
TOLERANCES = {
    torch.float32: (1e-5, 1e-4),
    torch.float16: (2e-3, 4e-3),
    torch.bfloat16: (1e-2, 2e-2),
}


@pytest.fixture
def device() -> torch.device:
    return DEVICE


@pytest.fixture
def compile_on():
    from fastdiode.runtime import set_compile

    set_compile(True)
    yield
    set_compile(False)


def make_input(shape, dtype, channels_last=False, scale=1.0, offset=0.0, seed=0):
    """A fresh random tensor on the test device, optionally channels_last, requiring grad."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * scale + offset).to(DEVICE, dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_(True)


def assert_close(actual, expected, dtype, what=""):
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def assert_same_layout(actual, expected):
    """Same memory format (NCHW or channels_last); strides of size-1 dimensions do not matter."""
    for fmt in (torch.contiguous_format, torch.channels_last):
        assert actual.is_contiguous(memory_format=fmt) == expected.is_contiguous(memory_format=fmt), (
            f"layout differs: strides {actual.stride()} vs {expected.stride()}")
