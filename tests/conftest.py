"""Test setup: Triton kernels run through the CPU interpreter when no CUDA device exists (set before any
`import triton`); fixtures for the device, compilation and the tiny digits set. Shared helpers live in
tests/helpers.py."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The torch halves of the fused ops run eagerly in the test grid (compiling each dtype x layout would cost
# minutes); tests marked `slow` turn compilation on through the `compile_on` fixture.
os.environ.setdefault("FASTDIODE_COMPILE", "0")


@pytest.fixture
def device() -> torch.device:
    from tests.helpers import DEVICE

    return DEVICE


@pytest.fixture
def compile_on():
    from fastdiode.runtime import set_compile

    set_compile(True)
    yield
    set_compile(False)


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """A few tiny digits images (tests.helpers.TINY_DIGITS), built once per test process."""
    from fastdiode.data.digits import build_digits
    from tests.helpers import TINY_DIGITS

    return build_digits(tmp_path_factory.mktemp("digits"), TINY_DIGITS, progress=False)
