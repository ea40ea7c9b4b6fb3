import pytest
import torch
import torch.nn.functional as F

from fastdiode.ops.kd import dense_kd_loss, dense_kd_loss_reference, kd_loss, kd_loss_reference
from tests.helpers import DEVICE, assert_close


def head_maps(shapes, dtype, seed=0, strided=False):
    """YOLO-style maps; ``strided`` makes them the permuted views a YoloHead returns (class axis not contiguous)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b, a, h, w, d in shapes:
        if strided:
            x = (torch.randn(b, a * d, h, w, generator=g) * 2).to(DEVICE, dtype)
            x = x.view(b, a, d, h, w).permute(0, 1, 3, 4, 2)
        else:
            x = (torch.randn(b, a, h, w, d, generator=g) * 2).to(DEVICE, dtype)
        out.append(x.requires_grad_(True) if x.is_leaf else x.detach().requires_grad_(True))
    return out


SHAPES = [[(2, 3, 4, 4, 7), (2, 3, 2, 2, 7)], [(1, 1, 3, 5, 6)], [(2, 3, 13, 13, 85)]]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_dense_kd_matches_the_reference(backend, dtype, strided, shapes, temperature):
    s = head_maps(shapes, dtype, strided=strided)
    t = head_maps(shapes, dtype, seed=1, strided=strided)
    out = dense_kd_loss(s, t, temperature, backend=backend)
    exp = dense_kd_loss_reference(s, t, temperature)
    assert_close(out, exp, torch.float32, "loss")
    for a, b in zip(torch.autograd.grad(out, s), torch.autograd.grad(exp, s)):
        assert_close(a, b, dtype, "grad")
        assert a[..., :5].abs().sum() == 0  # only the class logits learn from KD


def test_dense_kd_by_hand():
    """One cell, one class: w = σ(0) = 1/2 cancels in the normalisation; KL of Bernoulli(σ(t)) and Bernoulli(σ(s))."""
    s = torch.zeros(1, 1, 1, 1, 6)
    t = torch.zeros(1, 1, 1, 1, 6)
    s[..., 5], t[..., 5] = 0.0, 2.0
    q, p = torch.sigmoid(torch.tensor(2.0)), 0.5
    expected = q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))
    for backend in ("reference", "torch"):
        assert dense_kd_loss([s], [t], 1.0, backend=backend).item() == pytest.approx(expected.item(), rel=1e-5)
    assert dense_kd_loss([t], [t], 3.0, backend="torch").item() == pytest.approx(0.0, abs=1e-6)


def test_dense_kd_reference_gradcheck():
    s = torch.randn(1, 2, 2, 3, 7, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 2, 2, 3, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: dense_kd_loss_reference([x], [t], 2.0), (s,))


def test_dense_kd_layouts_that_cannot_match_are_a_clear_error():
    with pytest.raises(ValueError, match="one layout"):
        dense_kd_loss([torch.randn(1, 3, 4, 4, 7)], [torch.randn(1, 3, 4, 4, 8)])


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_loss_is_hintons(backend, temperature):
    s = torch.randn(5, 11, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 11, dtype=torch.float64)
    expected = F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1),
                        reduction="batchmean") * temperature ** 2
    out = kd_loss(s, t, temperature, backend=backend)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(torch.autograd.grad(out, s)[0], torch.autograd.grad(expected, s)[0])
    assert torch.autograd.gradcheck(lambda x: kd_loss_reference(x, t, temperature), (s,))


@pytest.mark.slow
def test_compiled_dense_kd(compile_on):
    s, t = head_maps(SHAPES[0], torch.float32, strided=True), head_maps(SHAPES[0], torch.float32, seed=1, strided=True)
    out, exp = dense_kd_loss(s, t, 2.0, backend="torch"), dense_kd_loss_reference(s, t, 2.0)
    assert_close(out, exp, torch.float32, "loss")
    for a, b in zip(torch.autograd.grad(out, s), torch.autograd.grad(exp, s)):
        assert_close(a, b, torch.float32, "grad")
