import pytest
import torch

from fastdiode.ops.bn_act_stats import bn_act_stat_loss, bn_act_stat_loss_reference
from tests.helpers import DEVICE, assert_close, assert_same_layout, make_input

SHAPES = [(1, 3, 1, 1), (2, 3, 5, 7), (3, 37, 6, 5), (2, 70, 3, 3)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def bn_params(c, seed=1):
    g = torch.Generator().manual_seed(seed)
    rm, rv = torch.randn(c, generator=g) + 0.5, torch.rand(c, generator=g) + 0.5
    weight, bias = torch.randn(c, generator=g), torch.randn(c, generator=g)  # negative scales included
    return [t.to(DEVICE) for t in (rm, rv, weight, bias)]


def run(fn, x, gy, params, act, **kw):
    rm, rv, weight, bias = params
    activation, slope = act
    y, loss = fn(x, rm, rv, weight, bias, 1e-4, slope, p=2, alpha_mean=0.7, alpha_var=1.3, activation=activation, **kw)
    (g,) = torch.autograd.grad((y.float() * gy).sum() + loss, x)
    return y, loss, g


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("act", [("leaky", 0.1), ("leaky", 0.0), ("leaky", 1.0), ("silu", 0.0)])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_matches_reference(shape, dtype, channels_last, act, backend):
    """Output, loss and input gradient (through both the activation and the statistics) match the unfused
    BatchNorm -> activation (leaky ReLU of three slopes, SiLU) -> bn_stat_loss reference."""
    x = make_input(shape, dtype, channels_last, scale=1.5, offset=0.7)
    gy = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    params = bn_params(shape[1])
    y_ref, loss_ref, g_ref = run(bn_act_stat_loss_reference, x, gy, params, act)
    y, loss, g = run(bn_act_stat_loss, x, gy, params, act, backend=backend)
    assert y.dtype == dtype and y.shape == x.shape and g.dtype == dtype
    assert_same_layout(y, x)
    assert_same_layout(g, x)
    assert_close(y, y_ref, dtype, "output")
    assert_close(loss, loss_ref, torch.float32 if dtype == torch.float32 else torch.float16, "loss")
    assert_close(g, g_ref, dtype, "grad")


def test_bn_without_affine_parameters():
    x = make_input((2, 4, 3, 3), torch.float32)
    rm, rv, _, _ = bn_params(4)
    y, loss = bn_act_stat_loss(x, rm, rv, None, None, 1e-5, 0.1, backend="torch")
    y_ref, loss_ref = bn_act_stat_loss_reference(x, rm, rv, None, None, 1e-5, 0.1)
    assert_close(y, y_ref, torch.float32, "output")
    assert_close(loss, loss_ref, torch.float32, "loss")


def test_bad_arguments_name_themselves():
    x = make_input((2, 4, 3, 3), torch.float32)
    rm, rv, w, b = bn_params(4)
    with pytest.raises(ValueError, match="running_var"):
        bn_act_stat_loss(x, rm, rv[:3], w, b, 1e-5, 0.1)
    with pytest.raises(ValueError, match="weight"):
        bn_act_stat_loss(x, rm, rv, w.long(), b, 1e-5, 0.1)
    with pytest.raises(ValueError, match="activation='gelu'"):
        bn_act_stat_loss(x, rm, rv, w, b, 1e-5, 0.1, activation="gelu")
