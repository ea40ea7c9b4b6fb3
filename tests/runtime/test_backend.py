import logging

import pytest
import torch

import fastdiode
from fastdiode.losses import BNStatLoss, TVPrior
from fastdiode.runtime import resolve_backend
from tests.helpers import DEVICE


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="backend='cuda' is not a backend"):
        resolve_backend("op", "cuda", torch.zeros(1))
    with pytest.raises(ValueError, match="backend='fast'"):
        fastdiode.set_backend("fast")


def test_auto_on_cpu_never_picks_the_interpreter():
    assert resolve_backend("op", "auto", torch.zeros(1)) == "torch"


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        resolve_backend("tv_prior", "triton", torch.zeros(1))


def test_default_backend_and_logging(caplog):
    previous = fastdiode.get_backend()
    try:
        fastdiode.set_backend("torch")
        with caplog.at_level(logging.INFO, logger="fastdiode"):
            assert resolve_backend("test_default_backend_op", None, torch.zeros(1)) == "torch"
            resolve_backend("test_default_backend_op", None, torch.zeros(1))
        assert sum("test_default_backend_op" in r.message for r in caplog.records) == 1
    finally:
        fastdiode.set_backend(previous)


@pytest.mark.slow
def test_fused_path_compiles_with_fullgraph():
    """The Triton ops are opaque custom ops with fake kernels: a step using them compiles without breaks."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)).to(DEVICE).eval()
    model.requires_grad_(False)
    bn_loss = BNStatLoss(model, backend="triton")
    tv = TVPrior(l1=1.0, l2=0.5, backend="triton")

    def step(x):
        model(x)
        return bn_loss() + tv(x)

    x = torch.rand(2, 3, 8, 8, device=DEVICE, requires_grad=True)
    eager = step(x)
    (g_eager,) = torch.autograd.grad(eager, x)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(x)
    (g_compiled,) = torch.autograd.grad(compiled, x)
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(g_compiled, g_eager)
