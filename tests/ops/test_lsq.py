"""LSQ fake quantization: the fused paths against the reference over dtype x layout x granularity, the scale's
gradient against LSQ's formula written by hand, and bad input (no gradcheck: the straight-through
gradients are by design not the derivative of the rounded forward)."""
import pytest
import torch

from fastdiode.ops.lsq import lsq_fake_quant, lsq_fake_quant_reference
from tests.helpers import DEVICE, assert_close, assert_same_layout, make_input

SHAPES = [(1, 3, 1, 1), (5, 3, 3, 3), (4, 37, 6, 5), (70, 9)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def run(fn, x, scale, gy, **kw):
    y = fn(x, scale, -8.0, 7.0, 0.1, **kw)
    gx, gs = torch.autograd.grad((y.float() * gy).sum(), (x, scale))
    return y, gx, gs


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_matches_reference(shape, dtype, channels_last, per_channel, backend):
    if channels_last and len(shape) != 4:
        pytest.skip("channels_last is a 4-d layout")
    x = make_input(shape, dtype, channels_last, scale=2.0)
    c = shape[0] if per_channel else 1
    scale = (torch.rand(c, generator=torch.Generator().manual_seed(1)) * 0.3 + 0.2).to(DEVICE).requires_grad_(True)
    gy = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    y_ref, gx_ref, gs_ref = run(lsq_fake_quant_reference, x, scale, gy)
    y, gx, gs = run(lsq_fake_quant, x, scale, gy, backend=backend)
    assert y.dtype == dtype and gx.dtype == dtype and gs.shape == scale.shape
    assert_same_layout(y, x)
    assert_same_layout(gx, x)
    assert_close(y, y_ref, dtype, "output")
    assert_close(gx, gx_ref, dtype, "grad x")
    torch.testing.assert_close(gs, gs_ref, rtol=1e-3 if dtype == torch.float32 else 3e-2, atol=1e-3)


def test_scale_gradient_is_lsq_formula():
    """dL/ds = g · Σ dL/dy · (round(v) − v inside, qmin below, qmax above), with v = x / s."""
    x = torch.tensor([[-3.0, -0.74, 0.0, 0.26, 0.5, 1.25, 5.0]])
    s, g, gy = torch.tensor([0.5], requires_grad=True), 0.25, torch.arange(1.0, 8.0)[None]
    for backend in ("reference", "torch"):
        y = lsq_fake_quant(x, s, -4.0, 3.0, g, backend=backend)
        (gs,) = torch.autograd.grad((y * gy).sum(), s)
        v = x / 0.5  # -6 (below), -1.48, 0, 0.52, 1 (a tie? no: exact), 2.5 (tie: to even 2), 10 (above)
        per = torch.where(v < -4, -4.0, torch.where(v > 3, 3.0, torch.round(v) - v))
        torch.testing.assert_close(gs, (g * (gy * per).sum()).reshape(1))
        torch.testing.assert_close(y, torch.clamp(torch.round(v), -4, 3) * 0.5)
        (gx,) = torch.autograd.grad((lsq_fake_quant(x.requires_grad_(True), s, -4.0, 3.0, g, backend=backend)
                                     * gy).sum(), x)
        torch.testing.assert_close(gx, torch.where((v >= -4) & (v <= 3), gy, 0.0))
    assert torch.round(torch.tensor(2.5)) == 2  # ties to even, which the kernels follow too


@pytest.mark.parametrize("scale, qmin, qmax, match", [
    (torch.ones(3), -8, 7, "scale: expected one element or one per index of dim 0"),
    (torch.ones(1), 7, -8, "qmin < qmax"),
])
def test_bad_input(scale, qmin, qmax, match):
    with pytest.raises(ValueError, match=match):
        lsq_fake_quant(torch.randn(4, 5), scale, qmin, qmax)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_rounds_as_torch_at_half_integers(backend):
    """Values on, just below and just above k + 1/2 (and the float just below 1/2, which floor(v + 0.5) takes up
    to 1) round exactly as torch.round of x / s: half to even, no off-by-one step."""
    halves = torch.arange(-8, 8, dtype=torch.float32) + 0.5
    x = torch.cat([halves, torch.nextafter(halves, halves - 1), torch.nextafter(halves, halves + 1),
                   torch.tensor([0.49999997, -0.49999997, 2.4999998])]).to(DEVICE)
    scale = torch.ones(1, device=DEVICE)
    y = lsq_fake_quant(x, scale, -8.0, 7.0, backend=backend)
    torch.testing.assert_close(y, torch.round(x).clamp(-8, 7), rtol=0, atol=0)
