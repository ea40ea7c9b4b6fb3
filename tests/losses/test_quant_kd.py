"""The QAT distillation losses against DFQ-Dojo's definitions written out by hand."""
import pytest
import torch

from fastdiode.losses import head_kl_loss, layer_mse_loss


def test_head_kl_is_per_image_over_the_flattened_map_times_tau_squared():
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(3, 6, 4, 4, generator=g), torch.randn(3, 6, 2, 2, generator=g)]
    t = [torch.randn(3, 6, 4, 4, generator=g), torch.randn(3, 6, 2, 2, generator=g)]
    tau, expected = 4.0, 0.0
    for a, b in zip(s, t):
        for i in range(3):  # one distribution per image over all its cells and channels
            p = torch.softmax(b[i].flatten() / tau, 0)
            expected += tau ** 2 * (p * (p.log() - torch.log_softmax(a[i].flatten() / tau, 0))).sum() / 3
    torch.testing.assert_close(head_kl_loss(s, t, tau), expected)
    assert head_kl_loss(t, t, tau).abs() < 1e-5  # float32 rounding times tau squared


def test_layer_mse_is_the_mean_over_layers_of_each_mean():
    s = [torch.ones(2, 3, 4, 4), torch.zeros(1, 5)]
    t = [torch.zeros(2, 3, 4, 4), torch.full((1, 5), 3.0)]
    assert layer_mse_loss(s, t).item() == pytest.approx((1.0 + 9.0) / 2)


def test_different_layouts_are_an_error():
    with pytest.raises(ValueError, match="head_kl: the student's maps"):
        head_kl_loss([torch.zeros(1, 6, 4, 4)], [torch.zeros(1, 6, 2, 2)])
