import pytest
import torch

from fastdiode.ops import bn_stat_loss, bn_stat_loss_reference
from tests.helpers import DEVICE, TOLERANCES, assert_close, assert_same_layout, make_input

SHAPES = [(1, 3, 1, 1), (2, 3, 5, 7), (3, 37, 6, 5), (2, 70, 3, 3), (2, 3, 40, 33)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def stats(c, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(c, generator=g) + 0.5).to(DEVICE), (torch.rand(c, generator=g) + 0.5).to(DEVICE)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_matches_reference(shape, dtype, channels_last, p, backend):
    x = make_input(shape, dtype, channels_last, scale=1.5, offset=0.7)
    rm, rv = stats(shape[1])
    ref = bn_stat_loss_reference(x, rm, rv, p=p, alpha_mean=0.7, alpha_var=1.3)
    (g_ref,) = torch.autograd.grad(ref, x)
    out = bn_stat_loss(x, rm, rv, p=p, alpha_mean=0.7, alpha_var=1.3, backend=backend)
    (g,) = torch.autograd.grad(out, x)
    assert out.dtype == torch.float32 and out.dim() == 0
    assert_close(out, ref, torch.float32 if dtype == torch.float32 else torch.float16, "loss")
    assert g.dtype == dtype
    assert_same_layout(g, x)
    assert_close(g, g_ref, dtype, "grad")


def test_large_offset_does_not_cancel():
    """Activations far from zero but near the running mean: the shifted accumulation keeps the variance."""
    x = make_input((4, 8, 16, 16), torch.float32, scale=1e-2, offset=1e3)
    rm = torch.full((8,), 1e3, device=DEVICE)
    rv = torch.full((8,), 1e-4, device=DEVICE)
    exact = bn_stat_loss_reference(x.detach().double(), rm.double(), rv.double())
    out = bn_stat_loss(x, rm, rv, backend="triton")
    torch.testing.assert_close(out.double(), exact, rtol=1e-3, atol=1e-7)


def test_zero_norm_gradient_is_finite():
    """Batch statistics exactly equal to the running ones (+-1 per channel: mean 0, variance 1): the p=2 norms
    are exactly 0 and the gradient must be 0, not NaN."""
    signs = torch.tensor([1.0, -1.0], device=DEVICE).repeat(2 * 4 * 3 * 4 // 2).view(2, 4, 3, 4)
    x = signs.requires_grad_(True)
    zeros, ones = torch.zeros(4, device=DEVICE), torch.ones(4, device=DEVICE)
    loss = bn_stat_loss(x, zeros, ones, backend="triton")
    (g,) = torch.autograd.grad(loss, x)
    assert loss.item() == 0.0
    assert torch.equal(g, torch.zeros_like(g))
    (g_ref,) = torch.autograd.grad(bn_stat_loss(x, zeros, ones, backend="reference"), x)
    assert torch.isfinite(g_ref).all()


def test_rank_2_and_3_inputs():
    for shape in [(6, 5), (4, 5, 7)]:
        x = make_input(shape, torch.float32)
        rm, rv = stats(5)
        ref = bn_stat_loss_reference(x, rm, rv)
        out = bn_stat_loss(x, rm, rv, backend="triton")
        assert_close(out, ref, torch.float32)
        assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(ref, x)[0], torch.float32)


def test_gradcheck_reference_float64():
    x = make_input((2, 3, 3, 4), torch.float64)
    rm, rv = (t.double() for t in stats(3))
    for p in (1, 2, 3):
        assert torch.autograd.gradcheck(lambda a: bn_stat_loss_reference(a, rm, rv, p=p), (x,))


def test_float64_auto_uses_reference():
    x = make_input((2, 3, 4, 4), torch.float64)
    rm, rv = (t.double() for t in stats(3))
    assert bn_stat_loss(x, rm, rv, backend="auto").dtype == torch.float64
    with pytest.raises(ValueError, match="triton"):
        bn_stat_loss(x, rm, rv, backend="triton")


@pytest.mark.parametrize(
    "args, match",
    [
        (lambda: (torch.randn(3, device=DEVICE), *stats(3)), "x: expected a tensor of shape"),
        (lambda: (torch.ones(2, 3, 4, 4, dtype=torch.int32, device=DEVICE), *stats(3)), "x: expected a floating"),
        (lambda: (torch.randn(2, 4, 3, 3, device=DEVICE), *stats(3)), "running_mean: expected a vector of length 4"),
        (lambda: (torch.randn(2, 3, 3, 3, device=DEVICE), stats(3)[0], torch.ones(5, device=DEVICE)),
         "running_var: expected a vector of length 3"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        bn_stat_loss(*args(), backend="reference")


def test_bad_norm_order():
    with pytest.raises(ValueError, match="p: expected a positive"):
        bn_stat_loss(torch.randn(2, 3, 2, 2, device=DEVICE), *stats(3), p=0)


@pytest.mark.slow
def test_compiled_backend_matches_reference(compile_on):
    for channels_last in (False, True):
        x = make_input((2, 6, 5, 7), torch.float32, channels_last)
        rm, rv = stats(6)
        ref = bn_stat_loss_reference(x, rm, rv)
        out = bn_stat_loss(x, rm, rv, backend="torch")
        assert_close(out, ref, torch.float32)
        (g,) = torch.autograd.grad(out, x)
        assert_close(g, torch.autograd.grad(ref, x)[0], torch.float32)
        assert_same_layout(g, x)


assert set(TOLERANCES) == set(DTYPES)
