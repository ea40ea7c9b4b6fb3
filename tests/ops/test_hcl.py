import pytest
import torch
import torch.nn.functional as F

from fastdiode.ops.hcl import hcl_loss, hcl_loss_reference, pool_weights
from tests.helpers import DEVICE, assert_close


def levels(shapes, dtype, channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in shapes:
        x = torch.randn(shape, generator=g).to(DEVICE, dtype)
        out.append((x.to(memory_format=torch.channels_last) if channels_last else x).requires_grad_(True))
    return out


# odd, non-square, h <= 4 (fewer pooled sizes), 1x1, and bins that overlap (13 is no multiple of 4 or 2)
SHAPES = [[(2, 3, 8, 8), (2, 5, 4, 4)], [(1, 2, 7, 5)], [(3, 4, 1, 1), (2, 2, 3, 9)], [(2, 3, 13, 13)]]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shapes", SHAPES)
def test_matches_the_reference(backend, dtype, channels_last, shapes):
    s = levels(shapes, dtype, channels_last)
    t = levels(shapes, dtype, channels_last, seed=1)
    out, exp = hcl_loss(s, t, backend=backend), hcl_loss_reference(s, t)
    assert_close(out, exp, torch.float32, "loss")
    for a, b in zip(torch.autograd.grad(out, s + t), torch.autograd.grad(exp, s + t)):
        assert_close(a, b, dtype, "grad")


def test_a_hand_computed_value():
    """One 2x2 level: k in (4, 2, 1) with k < 2 leaves k = 1, weight 1/2, so HCL = (mean(d²) + mean(d)²/2) / 1.5."""
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    t = torch.zeros_like(s)
    expected = ((1 + 4 + 9 + 16) / 4 + 0.5 * 2.5 ** 2) / 1.5
    assert hcl_loss([s], [t], backend="reference").item() == pytest.approx(expected)
    assert hcl_loss([s], [t], backend="torch").item() == pytest.approx(expected)
    assert pool_weights(8) == [(4, 0.5), (2, 0.25), (1, 0.125)] and pool_weights(1) == []


def test_reference_gradcheck():
    s = [torch.randn(1, 2, 5, 3, dtype=torch.float64, requires_grad=True)]
    t = [torch.randn(1, 2, 5, 3, dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(lambda a, b: hcl_loss_reference([a], [b]), (s[0], t[0]))


def test_reviewkd_formula_on_square_maps():
    """ReviewKD's own loop (pooling F_s and F_t apart, skipping k >= h) gives the same value."""
    s, t = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    loss, cnt, tot = F.mse_loss(s, t), 1.0, 1.0
    for k in (4, 2, 1):
        cnt /= 2.0
        loss = loss + F.mse_loss(F.adaptive_avg_pool2d(s, (k, k)), F.adaptive_avg_pool2d(t, (k, k))) * cnt
        tot += cnt
    assert hcl_loss([s], [t], backend="reference").item() == pytest.approx((loss / tot).item(), rel=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="same number"):
        hcl_loss([torch.randn(1, 2, 4, 4)], [])
    with pytest.raises(ValueError, match="level 0: student"):
        hcl_loss([torch.randn(1, 2, 4, 4)], [torch.randn(1, 3, 4, 4)])


@pytest.mark.slow
def test_compiled_torch_path(compile_on):
    s, t = levels(SHAPES[0], torch.float32), levels(SHAPES[0], torch.float32, seed=1)
    out, exp = hcl_loss(s, t, backend="torch"), hcl_loss_reference(s, t)
    assert_close(out, exp, torch.float32, "loss")
    for a, b in zip(torch.autograd.grad(out, s), torch.autograd.grad(exp, s)):
        assert_close(a, b, torch.float32, "grad")
