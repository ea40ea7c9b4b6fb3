import pytest
import torch
from torch import nn

from fastdiode.losses import BNStatLoss, cosine_layer_weights
from tests.helpers import DEVICE


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.LeakyReLU(0.1),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.LeakyReLU(0.1),
        )
        self.head = nn.Sequential(nn.Conv2d(16, 12, 1, bias=False), nn.BatchNorm2d(12), nn.LeakyReLU(0.1))

    def forward(self, x):
        return self.head(self.backbone(x))


def make_model(seed=0):
    torch.manual_seed(seed)
    model = SmallCNN().to(DEVICE)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval().requires_grad_(False)


def explicit_hooks_loss(model, x, weights, p=2):
    """DeepInversion-style forward hooks, written out by hand."""
    values = []

    def hook(module, inputs, output):
        a = inputs[0]
        mean = a.mean([0, 2, 3])
        var = a.permute(1, 0, 2, 3).contiguous().view(a.shape[1], -1).var(1, unbiased=False)
        values.append(torch.norm(module.running_mean - mean, p) + torch.norm(module.running_var - var, p))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    model(x)
    for h in handles:
        h.remove()
    return sum(w * v for w, v in zip(weights, values))


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("p", [1, 2])
def test_matches_explicit_hooks(backend, p):
    model = make_model()
    x = torch.rand(4, 3, 12, 12, device=DEVICE, requires_grad=True)
    expected = explicit_hooks_loss(model, x, [3.0, 0.5, 2.0], p)
    (g_expected,) = torch.autograd.grad(expected, x)
    with BNStatLoss(model, p=p, first_bn_coef=2.0, layer_weights=[1.0, 0.5, 2.0], backend=backend) as loss_fn:
        model(x)
        loss = loss_fn()
        (g,) = torch.autograd.grad(loss, x)
        assert loss_fn.layer_values.shape == (3,) and not loss_fn.layer_values.requires_grad
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g, g_expected, rtol=1e-4, atol=1e-6)


def test_no_hooks_left_behind():
    model = make_model()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    loss_fn = BNStatLoss(model, backend="reference")
    assert all(len(m._forward_pre_hooks) == 1 for m in bns)
    loss_fn.remove()
    assert all(len(m._forward_pre_hooks) == 0 for m in bns)
    with BNStatLoss(model, backend="reference"):
        pass
    assert all(len(m._forward_pre_hooks) == 0 for m in bns)


def test_layer_selection():
    model = make_model()
    assert BNStatLoss(model, layers="backbone", backend="reference").layer_names == ["backbone.1", "backbone.4"]
    assert BNStatLoss(model, layers=["head.1"], backend="reference").layer_names == ["head.1"]
    chosen = BNStatLoss(model, layers=lambda name, m: m.num_features > 8, backend="reference").layer_names
    assert chosen == ["backbone.4", "head.1"]
    with pytest.raises(ValueError, match="head.9"):
        BNStatLoss(model, layers=["head.9"])
    with pytest.raises(ValueError, match="neither a `backbone` submodule"):
        BNStatLoss(model.head, layers="backbone")
    with pytest.raises(ValueError, match="selects no BatchNorm"):
        BNStatLoss(nn.Conv2d(1, 1, 1))


def test_weights_are_a_device_buffer_updated_in_place():
    model = make_model()
    x = torch.rand(2, 3, 8, 8, device=DEVICE)
    loss_fn = BNStatLoss(model, backend="reference")
    buffer = loss_fn.layer_weights
    model(x)
    full = loss_fn()
    per_layer = loss_fn.layer_values
    loss_fn.set_layer_weights(torch.tensor([1.0, 0.0, 0.0]))
    assert loss_fn.layer_weights is buffer
    model(x)
    torch.testing.assert_close(loss_fn(), per_layer[0])
    torch.testing.assert_close(full, per_layer.sum())
    with pytest.raises(ValueError, match="expected 3 weights"):
        loss_fn.set_layer_weights([1.0, 2.0])


def test_call_without_forward_names_the_layers():
    loss_fn = BNStatLoss(make_model(), backend="reference")
    with pytest.raises(RuntimeError, match="backbone.1"):
        loss_fn()


def test_teacher_parameters_get_no_gradient():
    model = make_model()
    x = torch.rand(2, 3, 8, 8, device=DEVICE, requires_grad=True)
    with BNStatLoss(model, backend="triton") as loss_fn:
        model(x)
        loss_fn().backward()
    assert x.grad is not None
    assert all(p.grad is None for p in model.parameters())


def test_cosine_layer_weights():
    w = cosine_layer_weights(0, 100, 10)
    assert w.tolist() == [1.0] * 10
    w = cosine_layer_weights(torch.tensor(50), 100, 10)  # cos(pi/4) * 10 = 7.07 -> first 8 layers
    assert w.tolist() == [1.0] * 8 + [0.0] * 2
    assert cosine_layer_weights(99, 100, 10).tolist() == [1.0] + [0.0] * 9


def darknet_teacher():
    from fastdiode.models import build_model

    torch.manual_seed(0)
    model = build_model("yolo-micro", num_classes=3, width=0.25).to(DEVICE)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_blocks_match_hooks(backend):
    """On Darknet blocks the tap (BN + activation + statistics in one op) gives the hooks' outputs, loss and
    image gradient, and leaves no tap behind."""
    model = darknet_teacher()
    x = torch.rand(2, 3, 64, 64, device=DEVICE).to(memory_format=torch.channels_last).requires_grad_(True)
    results = []
    for fuse in (False, True):
        with BNStatLoss(model, first_bn_coef=2.0, backend=backend, fuse=fuse) as loss_fn:
            assert bool(loss_fn._tapped) == fuse and bool(loss_fn._handles) != fuse
            outs = model(x)
            loss = loss_fn() + sum(o.square().mean() for o in outs)
            (g,) = torch.autograd.grad(loss, x)
            results.append((outs, loss.detach(), g, loss_fn.layer_values))
    (outs0, loss0, g0, v0), (outs1, loss1, g1, v1) = results
    for a, b in zip(outs0, outs1):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loss1, loss0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v1, v0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g1, g0, atol=1e-7, rtol=1e-4)
    assert all(b.stat_tap is None for b in model.conv_blocks())


def test_tap_falls_back_in_train_mode_or_with_trainable_bn():
    """BN in train mode normalises with batch statistics and trainable BN parameters need gradients: the tap
    then runs the unfused BN, so outputs and parameter gradients are the plain model's."""
    model = darknet_teacher()
    x = torch.rand(2, 3, 64, 64, device=DEVICE)
    with BNStatLoss(model):
        model.requires_grad_(True)
        tapped = sum(o.sum() for o in model(x))
        tapped.backward()
        grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    plain = sum(o.sum() for o in model(x))
    plain.backward()
    torch.testing.assert_close(tapped, plain)
    for a, p in zip(grads, model.parameters()):
        torch.testing.assert_close(a, p.grad)
    model.train()
    with BNStatLoss(model) as loss_fn:
        outs = model(x)
        assert torch.isfinite(loss_fn())
    assert torch.allclose(outs[0], model(x)[0], atol=1e-5)


def test_two_losses_on_one_model_both_see_every_layer():
    """A second loss on tapped blocks hooks the BN layers; the taps then run BN unfused so that both fire."""
    model = darknet_teacher()
    x = torch.rand(1, 3, 32, 32, device=DEVICE)
    with BNStatLoss(model) as alone:
        model(x)
        expected = alone()
    with BNStatLoss(model) as first, BNStatLoss(model, p=1) as second:
        assert not second._tapped
        model(x)
        torch.testing.assert_close(first(), expected)
        assert torch.isfinite(second())
