import pytest
import torch

from fastdiode.ops import tv_prior, tv_prior_reference
from tests.helpers import DEVICE, assert_close, assert_same_layout, make_input

SHAPES = [(1, 3, 2, 2), (2, 3, 5, 7), (1, 1, 9, 2), (2, 3, 17, 140)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_matches_reference(shape, dtype, channels_last, backend):
    x = make_input(shape, dtype, channels_last)
    w1, w2 = 0.75, 1.25
    l1_ref, l2_ref = tv_prior_reference(x)
    (g_ref,) = torch.autograd.grad(w1 * l1_ref + w2 * l2_ref, x)
    l1, l2 = tv_prior(x, backend=backend)
    (g,) = torch.autograd.grad(w1 * l1 + w2 * l2, x)
    assert l1.dtype == l2.dtype == torch.float32
    assert_close(l1, l1_ref, torch.float32, "tv_l1")
    assert_close(l2, l2_ref, torch.float32, "tv_l2")
    assert g.dtype == dtype
    assert_same_layout(g, x)
    assert_close(g, g_ref, dtype, "grad")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_each_output_alone_has_its_own_gradient(backend):
    x = make_input((2, 3, 6, 5), torch.float32)
    for k in range(2):
        ref = torch.autograd.grad(tv_prior_reference(x)[k], x)[0]
        out = torch.autograd.grad(tv_prior(x, backend=backend)[k], x)[0]
        assert_close(out, ref, torch.float32, f"output {k}")


def test_known_values():
    """A vertical step edge of height 1 in a 1x1x2x3 image: d1 has one |1| of 4 entries, d2 none, the two
    diagonals one each of 2 entries."""
    x = torch.tensor([[[[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]]], device=DEVICE)
    for backend in ("reference", "torch", "triton"):
        l1, l2 = tv_prior(x, backend=backend)
        assert l1.item() == pytest.approx(2 / 4 + 0 + 1 / 2 + 1 / 2)
        assert l2.item() == pytest.approx(2**0.5 + 0 + 1 + 1)


def test_constant_image_is_zero_with_zero_gradient():
    x = torch.full((2, 3, 4, 4), 0.3, device=DEVICE, requires_grad=True)
    for backend in ("reference", "torch", "triton"):
        l1, l2 = tv_prior(x, backend=backend)
        (g,) = torch.autograd.grad(l1 + l2, x)
        assert l1.item() == 0 and l2.item() == 0
        assert torch.equal(g, torch.zeros_like(g))


def test_gradcheck_reference_float64():
    x = make_input((2, 2, 4, 5), torch.float64)
    assert torch.autograd.gradcheck(lambda a: tv_prior_reference(a)[0] * 0.3 + tv_prior_reference(a)[1], (x,))


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(3, 4, 4), "x: expected a tensor of shape"),
        (torch.ones(1, 3, 4, 4, dtype=torch.int64), "x: expected a floating"),
        (torch.randn(1, 3, 1, 4), "H >= 2 and W >= 2"),
    ],
)
def test_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        tv_prior(x.to(DEVICE), backend="reference")


@pytest.mark.slow
def test_compiled_backend_matches_reference(compile_on):
    x = make_input((2, 3, 9, 11), torch.float32, channels_last=True)
    ref = tv_prior_reference(x)
    out = tv_prior(x, backend="torch")
    for a, b in zip(out, ref):
        assert_close(a, b, torch.float32)
    g = torch.autograd.grad(out[0] + 2 * out[1], x)[0]
    assert_close(g, torch.autograd.grad(ref[0] + 2 * ref[1], x)[0], torch.float32)
