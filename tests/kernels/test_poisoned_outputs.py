"""Every element of a kernel's output is written: outputs are poisoned with NaN before the launch."""
import torch

from tests.helpers import DEVICE


def poisoned(like):
    return torch.full_like(like, float("nan"))


def test_bn_affine_grad_writes_everything():
    from fastdiode.kernels.bn_stats import affine_grad

    for x in (torch.randn(3, 37, 30, device=DEVICE), torch.randn(2, 6, 5, 7, device=DEVICE).to(
            memory_format=torch.channels_last).view(2, 6, 35)):
        c = x.shape[1]
        out = poisoned(x)
        affine_grad(x, torch.randn(c, device=DEVICE), torch.randn(c, device=DEVICE), torch.randn(c, device=DEVICE),
                    out=out)
        assert torch.isfinite(out).all()


def test_bn_moments_partials_cover_every_channel():
    from fastdiode.kernels.bn_stats import moments

    x = torch.randn(5, 70, 9, device=DEVICE)
    dmean, var = moments(x, torch.zeros(70, device=DEVICE))
    assert torch.isfinite(dmean).all() and torch.isfinite(var).all()
    v, m = torch.var_mean(x, dim=(0, 2), correction=0)
    torch.testing.assert_close(dmean, m, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(var, v, atol=1e-5, rtol=1e-5)


def test_tv_grad_writes_everything():
    from fastdiode.kernels.tv import tv_grad

    x = torch.randn(2, 3, 17, 9, device=DEVICE).to(memory_format=torch.channels_last)
    out = poisoned(x)
    tv_grad(x, torch.rand(8, device=DEVICE), out=out)
    assert torch.isfinite(out).all()


def test_augment_writes_everything():
    from fastdiode.kernels.gather_affine import gather_affine_mask

    x = torch.randn(2, 3, 19, 5, device=DEVICE)
    b = x.shape[0]
    for adjoint in (False, True):
        out = poisoned(x)
        gather_affine_mask(x, torch.tensor([3, 0], device=DEVICE), torch.tensor([1, 4], device=DEVICE),
                           torch.tensor([True, False], device=DEVICE), torch.ones(b, device=DEVICE),
                           torch.zeros(b, device=DEVICE), torch.tensor([[0, 0, 5, 5], [0, 0, 0, 0]], device=DEVICE),
                           adjoint=adjoint, out=out)
        assert torch.isfinite(out).all()
