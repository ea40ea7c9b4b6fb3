"""CPU microbenchmarks of the fused ops, fwd + bwd, each against the reference-style code in the same run.

    make bench    (or: pytest benchmarks/test_ops_cpu.py --benchmark-only --benchmark-json=OUT.json)

Shapes: the 11 BN inputs of YOLOv3-tiny at 128 px, batch 16; images 16x3x128x128; its neck features and head maps;
16 images x 8 boxes cropped at 32 px. Gradients are taken with
torch.autograd.grad (no accumulation into .grad on either side). The first call of each case (which
compiles the fastdiode torch halves) is excluded by a warm-up round.
"""
from __future__ import annotations

import random

import pytest
import torch

from benchmarks import reference_style as ref
from benchmarks.shapes import yolov3_tiny_bn_shapes
from fastdiode.augment import DiodeAugment
from fastdiode.losses import bn_stat_loss, dense_kd_loss, hcl_loss, tv_prior
from fastdiode.ops import bn_act_stat_loss, roi_crop

IMPLS = ["fastdiode", "reference_style"]
BATCH, SIZE, JITTER = 16, 128, 16


def run(benchmark, step):
    step()  # compile / warm up outside the timed rounds
    benchmark.pedantic(step, rounds=60, warmup_rounds=5, iterations=1)


@pytest.fixture(scope="module")
def bn_inputs():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(s, generator=g).requires_grad_(True) for s in yolov3_tiny_bn_shapes(SIZE, BATCH)]
    stats = [(torch.randn(x.shape[1], generator=g), torch.rand(x.shape[1], generator=g) + 0.5) for x in xs]
    return xs, stats


@pytest.fixture(scope="module")
def images():
    return torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).requires_grad_(True)


@pytest.mark.benchmark(group="bn_stat_loss: YOLOv3-tiny BN inputs, 128 px, batch 16, fwd+bwd")
@pytest.mark.parametrize("impl", IMPLS)
def test_bn_stat_loss(benchmark, impl, bn_inputs):
    xs, stats = bn_inputs
    loss_fn = bn_stat_loss if impl == "fastdiode" else ref.bn_feature_loss

    def step():
        torch.autograd.grad(sum(loss_fn(x, rm, rv) for x, (rm, rv) in zip(xs, stats)), xs)

    run(benchmark, step)


@pytest.fixture(scope="module")
def bn_blocks(bn_inputs):
    """The BN inputs in channels_last (the teacher's layout) with each BN layer's affine parameters."""
    xs, stats = bn_inputs
    g = torch.Generator().manual_seed(3)
    xs = [x.detach().to(memory_format=torch.channels_last).requires_grad_(True) for x in xs]
    params = [(rm, rv, torch.randn(len(rm), generator=g), torch.randn(len(rm), generator=g)) for rm, rv in stats]
    return xs, params


def unfused_block(x, rm, rv, weight, bias, loss_fn):
    y = torch.nn.functional.leaky_relu(torch.nn.functional.batch_norm(x, rm, rv, weight, bias, False, 0.0, 1e-4), 0.1)
    return y, loss_fn(x, rm, rv)


@pytest.mark.benchmark(group="BN block (eval BN + leaky ReLU + statistics loss), YOLOv3-tiny, 128 px, batch 16, "
                             "fwd+bwd")
@pytest.mark.parametrize("impl", ["fastdiode", "reference_style", "unfused"])
def test_bn_block(benchmark, impl, bn_blocks):
    """The Conv block's BN, activation and BN-statistics loss: one fused op, against the same three steps with
    the reference-style hook loss, and with fastdiode's own (fused, but separate) statistics loss."""
    xs, params = bn_blocks
    if impl == "fastdiode":
        block = lambda x, p: bn_act_stat_loss(x, *p, 1e-4, 0.1)  # noqa: E731
    else:
        loss_fn = bn_stat_loss if impl == "unfused" else ref.bn_feature_loss
        block = lambda x, p: unfused_block(x, *p, loss_fn)  # noqa: E731

    def step():
        outs = [block(x, p) for x, p in zip(xs, params)]
        total = sum(loss + y.mean() for y, loss in outs)
        torch.autograd.grad(total, xs)

    run(benchmark, step)


@pytest.mark.benchmark(group="tv_prior: 16x3x128x128, fwd+bwd of L1 + L2")
@pytest.mark.parametrize("impl", IMPLS)
def test_tv_prior(benchmark, impl, images):
    prior = tv_prior if impl == "fastdiode" else ref.image_prior_losses

    def step():
        l1, l2 = prior(images)
        torch.autograd.grad(75.0 * l1 + 1e-4 * l2, images)

    run(benchmark, step)


@pytest.mark.benchmark(group="augment: 16x3x128x128, jitter 16, fresh draw, fwd+bwd")
@pytest.mark.parametrize("impl", IMPLS)
def test_augment(benchmark, impl, images):
    grad_out = torch.randn_like(images)
    if impl == "fastdiode":
        aug, g = DiodeAugment(jitter=JITTER), torch.Generator().manual_seed(2)
        forward = lambda: aug(images, generator=g)[0]  # noqa: E731
    else:
        random.seed(2)
        forward = lambda: ref.augment(images, JITTER)  # noqa: E731

    def step():
        torch.autograd.grad(forward(), images, grad_out)

    run(benchmark, step)


@pytest.fixture(scope="module")
def neck_features():
    """YOLOv3-tiny's neck features at 128 px, batch 16 (the inputs of its two heads' output convs)."""
    g = torch.Generator().manual_seed(4)
    shapes = [(BATCH, 512, SIZE // 32, SIZE // 32), (BATCH, 256, SIZE // 16, SIZE // 16)]
    student = [torch.randn(s, generator=g).requires_grad_(True) for s in shapes]
    return student, [torch.randn(s, generator=g) for s in shapes]


@pytest.mark.benchmark(group="hcl_loss: YOLOv3-tiny neck features, 128 px, batch 16, fwd+bwd")
@pytest.mark.parametrize("impl", IMPLS)
def test_hcl(benchmark, impl, neck_features):
    student, teacher = neck_features
    loss_fn = hcl_loss if impl == "fastdiode" else ref.review_hcl

    def step():
        torch.autograd.grad(loss_fn(student, teacher), student)

    run(benchmark, step)


@pytest.fixture(scope="module")
def head_maps():
    """YOLOv3-tiny's head maps at 128 px, batch 16, 80 classes, as its YOLO layers return them (permuted views)."""
    g = torch.Generator().manual_seed(5)
    maps = []
    for grid in (SIZE // 32, SIZE // 16):
        for _ in range(2):
            maps.append(torch.randn(BATCH, 3 * 85, grid, grid, generator=g).view(BATCH, 3, 85, grid, grid)
                        .permute(0, 1, 3, 4, 2))
    student = [m.detach().requires_grad_(True) for m in maps[0::2]]
    return student, maps[1::2]


@pytest.mark.benchmark(group="dense_kd_loss: YOLOv3-tiny head maps, 80 classes, 128 px, batch 16, T 2, fwd+bwd")
@pytest.mark.parametrize("impl", IMPLS)
def test_dense_kd(benchmark, impl, head_maps):
    student, teacher = head_maps
    loss_fn = dense_kd_loss if impl == "fastdiode" else ref.sigmoid_kd

    def step():
        torch.autograd.grad(loss_fn(student, teacher, 2.0), student)

    run(benchmark, step)


@pytest.fixture(scope="module")
def crop_inputs():
    """16 images of 128 px with 8 boxes each (normalised x1, y1, x2, y2), as DICOD's localization loss crops them."""
    g = torch.Generator().manual_seed(6)
    lo = torch.rand(BATCH, 8, 2, generator=g) * 0.6
    boxes = torch.cat([lo, lo + torch.rand(BATCH, 8, 2, generator=g) * 0.35 + 0.05], -1).requires_grad_(True)
    return torch.randn(BATCH, 3, SIZE, SIZE, generator=g).requires_grad_(True), boxes


@pytest.mark.benchmark(group="roi_crop: 16 images x 8 boxes, 32 px crops pooled 4x4 and 8x8, fwd+bwd")
@pytest.mark.parametrize("impl", IMPLS)
def test_roi_crop(benchmark, impl, crop_inputs):
    images, boxes = crop_inputs

    def crops():
        if impl == "fastdiode":
            p8 = roi_crop(images, boxes, 32, pool=8)
            return p8.unflatten(-1, (4, 2)).unflatten(-3, (4, 2)).mean((-1, -3)), p8  # 4x4 bins nest in 8x8
        return ref.dicod_crops(images, boxes, 32)

    def step():
        p4, p8 = crops()
        torch.autograd.grad(p4.abs().sum() + p8.abs().sum(), (images, boxes))

    run(benchmark, step)
