import pytest
import torch

from fastdiode.ops import gather_affine_mask, gather_affine_mask_reference
from tests.helpers import DEVICE, assert_close, assert_same_layout, make_input

SHAPES = [(1, 3, 1, 1), (2, 3, 5, 7), (3, 2, 9, 16), (2, 3, 20, 131)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def params(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    sy = torch.randint(-2 * h, 2 * h + 1, (b,), generator=g)
    sx = torch.randint(-2 * w, 2 * w + 1, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5
    gain = 1 + 0.1 * torch.randn(b, generator=g)
    bias = 0.2 * torch.randn(b, generator=g)
    y0 = torch.randint(0, h, (b,), generator=g)
    x0 = torch.randint(0, w, (b,), generator=g)
    y1 = y0 + torch.randint(0, h, (b,), generator=g)
    x1 = x0 + torch.randint(1, w + 1, (b,), generator=g)
    erase = torch.stack([y0, x0, y1, x1], 1)
    return [t.to(DEVICE) for t in (sy, sx, flip, gain, bias, erase)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_matches_reference(shape, dtype, channels_last, backend):
    x = make_input(shape, dtype, channels_last)
    p = params(shape[0], shape[2], shape[3])
    gy = torch.randn(shape, device=DEVICE, dtype=dtype)
    ref = gather_affine_mask_reference(x, *p)
    (g_ref,) = torch.autograd.grad(ref, x, gy)
    out = gather_affine_mask(x, *p, backend=backend)
    (g,) = torch.autograd.grad(out, x, gy)
    assert out.dtype == dtype
    if backend == "triton":
        assert_same_layout(out, x)
    assert_close(out, ref, dtype, "forward")
    assert_close(g, g_ref, dtype, "grad")


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_adjoint_identity(backend):
    """<A x, y> = <x, A^T y> for the linear part (bias 0); A^T is the adjoint (Triton kernel or the CPU host
    path) or, for the reference, autograd."""
    b, c, h, w = 3, 2, 7, 10
    sy, sx, flip, gain, _, erase = params(b, h, w, seed=3)
    x = make_input((b, c, h, w), torch.float64 if backend == "reference" else torch.float32, seed=1)
    y = torch.randn(b, c, h, w, device=DEVICE, dtype=x.dtype)
    ax = gather_affine_mask(x, sy, sx, flip, gain, torch.zeros_like(gain), erase, backend=backend)
    (aty,) = torch.autograd.grad(ax, x, y)
    lhs = (ax.double() * y.double()).sum()
    rhs = (x.double() * aty.double()).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_identity_parameters_copy_the_input(backend):
    x = make_input((2, 3, 5, 6), torch.float32)
    zeros = torch.zeros(2, dtype=torch.long, device=DEVICE)
    out = gather_affine_mask(x, zeros, zeros, zeros.bool(), torch.ones(2, device=DEVICE),
                             torch.zeros(2, device=DEVICE), torch.zeros(2, 4, dtype=torch.long, device=DEVICE),
                             backend=backend)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_matches_roll_and_flip():
    """The reference agrees with torch.roll/torch.flip for one image."""
    x = make_input((1, 3, 6, 8), torch.float32).detach()
    sy, sx = torch.tensor([2], device=DEVICE), torch.tensor([-3], device=DEVICE)
    one, zero = torch.ones(1, device=DEVICE), torch.zeros(1, device=DEVICE)
    no_erase = torch.zeros(1, 4, dtype=torch.long, device=DEVICE)
    for flip in (False, True):
        expect = torch.roll(x, (2, -3), (2, 3))
        expect = expect.flip(3) if flip else expect
        f = torch.tensor([flip], device=DEVICE)
        out = gather_affine_mask_reference(x, sy, sx, f, one, zero, no_erase)
        assert torch.equal(out, expect)


def test_gradcheck_reference_float64():
    x = make_input((2, 2, 4, 5), torch.float64)
    p = params(2, 4, 5, seed=4)
    assert torch.autograd.gradcheck(lambda a: gather_affine_mask_reference(a, *p), (x,))


def test_bad_parameter_shape():
    x = make_input((2, 3, 4, 4), torch.float32)
    p = params(3, 4, 4)
    with pytest.raises(ValueError, match="shift_y: expected shape \\(2,\\)"):
        gather_affine_mask(x, *p, backend="reference")
