import pytest
import torch
from torch import nn

from fastdiode.losses import BNStatLoss
from fastdiode.models import build_model
from fastdiode.ops.frozen_conv import frozen_conv2d


def saved_bytes(fn, params=()):
    """Bytes autograd saves for backward while running fn(), not counting the parameters ``params``."""
    sizes = []
    skip = {p.data_ptr() for p in params}

    def pack(t):
        if t.data_ptr() not in skip:
            sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(sizes)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("stride,groups,bias", [(1, 1, False), (2, 1, True), (1, 2, False)])
def test_matches_conv_and_saves_no_input(channels_last, stride, groups, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride, 1, groups=groups, bias=bias).requires_grad_(False)
    x = torch.randn(2, 4, 9, 8)
    x = (x.to(memory_format=torch.channels_last) if channels_last else x).requires_grad_(True)
    gy = torch.randn_like(conv(x))
    ref, ref_saved = saved_bytes(lambda: conv(x))
    out, saved = saved_bytes(lambda: frozen_conv2d(x, conv))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out, x, gy)[0], torch.autograd.grad(ref, x, gy)[0])
    assert saved == conv.weight.numel() * 4 and ref_saved >= saved + x.numel() * 4


def test_under_autocast_matches_autocast_conv():
    """Under bf16 autocast: the autocast conv's output and input gradient (x's dtype), bit for bit."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, 1, 1, bias=True)
    x = torch.randn(2, 4, 7, 7).requires_grad_(True)
    gy = torch.randn(2, 6, 7, 7)
    outs = []
    for frozen in (False, True):
        conv.requires_grad_(not frozen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = frozen_conv2d(x, conv) if frozen else conv(x)
        outs.append((y, torch.autograd.grad(y, x, gy)[0]))
    (y_ref, g_ref), (y, g) = outs
    assert y.dtype == torch.bfloat16 and g.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, atol=0, rtol=0)
    torch.testing.assert_close(g, g_ref, atol=0, rtol=0)


def test_frozen_teacher_holds_half_the_activations():
    """A frozen yolov3-tiny under inversion (BN-statistics taps, input gradient only) gives the trainable
    model's gradient while holding about half the activations for backward (no conv inputs, one tensor per
    fused BN block)."""
    model = build_model("yolov3-tiny", num_classes=5).eval()
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    results = []
    for trainable in (True, False):
        model.requires_grad_(trainable)
        with BNStatLoss(model) as bn_loss:
            outs, saved = saved_bytes(lambda: model(x), model.parameters())
            loss = bn_loss() + sum(o.square().sum() for o in outs)
        results.append((torch.autograd.grad(loss, x)[0], saved))
    (g_plain, plain_saved), (g_frozen, frozen_saved) = results
    torch.testing.assert_close(g_frozen, g_plain, atol=1e-6, rtol=1e-4)
    assert frozen_saved < 0.6 * plain_saved, (frozen_saved, plain_saved)


def test_string_padding_is_refused():
    with pytest.raises(ValueError, match="padding"):
        frozen_conv2d(torch.rand(1, 1, 4, 4), nn.Conv2d(1, 1, 3, padding="same").requires_grad_(False))
