"""Correctness on CUDA at real sizes: the Triton kernels against the references at YOLOv3 shapes, the frozen
conv under bf16 autocast, and the inversion step replayed from its CUDA graph against the eager step.

Marked ``gpu``; they run when CUDA is present (``make bench-gpu`` runs them before it measures). With
``FASTDIODE_GPU_TESTS_ON_CPU=1`` (and ``TRITON_INTERPRET=1``) the same tests run at tiny sizes on the CPU,
which is how CI keeps them working without a GPU (tests/test_gpu_suite_smoke.py)."""
import os

import pytest
import torch

from fastdiode.augment import augment_images, sample_augment_params
from fastdiode.ops import bn_stat_loss, bn_stat_loss_reference, tv_prior, tv_prior_reference
from fastdiode.ops.bn_act_stats import bn_act_stat_loss, bn_act_stat_loss_reference
from fastdiode.ops.frozen_conv import frozen_conv2d

CUDA = torch.cuda.is_available()
ON_CPU = os.environ.get("FASTDIODE_GPU_TESTS_ON_CPU") == "1"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not (CUDA or ON_CPU), reason="needs a CUDA device")]
DEVICE = torch.device("cuda" if CUDA else "cpu")
BIG = (48, 64, 208, 208) if CUDA else (2, 8, 9, 11)  # a YOLOv3 416² layer at batch 48
IMAGES = (48, 3, 416, 416) if CUDA else (2, 3, 13, 17)
TOL = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (2e-2, 2e-2), torch.float16: (4e-3, 4e-3)}
GRID = [(dtype, cl) for dtype in TOL for cl in (False, True)]


def close(actual, expected, tol, what):
    torch.testing.assert_close(actual.float(), expected.float(), atol=tol[0], rtol=tol[1], msg=lambda m: f"{what}: {m}")


def layout(x, channels_last):
    return x.to(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("dtype, channels_last", GRID)
@pytest.mark.parametrize("shape", [(3, 37, 6, 5), BIG])
def test_bn_stat_loss(dtype, channels_last, shape):
    x = layout(torch.randn(shape, device=DEVICE).mul(1.3).add(0.4).to(dtype), channels_last).requires_grad_(True)
    rm, rv = torch.randn(shape[1], device=DEVICE), torch.rand(shape[1], device=DEVICE) + 0.5
    out, exp = bn_stat_loss(x, rm, rv, backend="triton"), bn_stat_loss_reference(x, rm, rv)
    close(out, exp, (1e-4, 1e-4), "loss")
    close(torch.autograd.grad(out, x)[0], torch.autograd.grad(exp, x)[0], TOL[dtype], "grad")


@pytest.mark.parametrize("dtype, channels_last", GRID)
@pytest.mark.parametrize("activation", ["leaky", "silu"])
def test_bn_act_stat_loss(dtype, channels_last, activation):
    x = layout(torch.randn(BIG, device=DEVICE).mul(1.3).add(0.4).to(dtype), channels_last).requires_grad_(True)
    c = BIG[1]
    stats = (torch.randn(c, device=DEVICE), torch.rand(c, device=DEVICE) + 0.5, torch.randn(c, device=DEVICE),
             torch.randn(c, device=DEVICE))
    gy = torch.randn(BIG, device=DEVICE)
    outs = []
    for fn, kw in ((bn_act_stat_loss, {"backend": "triton"}), (bn_act_stat_loss_reference, {})):
        y, loss = fn(x, *stats, 1e-4, 0.1, activation=activation, **kw)
        outs.append((y, loss, torch.autograd.grad((y.float() * gy).sum() + loss, x)[0]))
    (y, loss, grad), (y_ref, loss_ref, grad_ref) = outs
    close(y, y_ref, TOL[dtype], "output")
    close(loss, loss_ref, (1e-4, 1e-4), "loss")
    # At the activation's kink (pre-activation within rounding of 0) the two sides may take different slopes;
    # those elements (about 1 in 10^4 lie within 1e-5 of it) are left out of the gradient check.
    smooth = y_ref.float().abs() > 1e-5 if activation == "leaky" else torch.ones_like(y_ref, dtype=torch.bool)
    assert (~smooth).float().mean().item() < 1e-3
    close(grad[smooth], grad_ref[smooth], TOL[dtype], "grad")


@pytest.mark.parametrize("dtype, channels_last", GRID)
def test_tv_prior_and_augmentation(dtype, channels_last):
    img = layout(torch.rand(IMAGES, device=DEVICE).to(dtype), channels_last).requires_grad_(True)
    l1, l2 = tv_prior(img, backend="triton")
    r1, r2 = tv_prior_reference(img)
    close(torch.stack([l1, l2]), torch.stack([r1, r2]), (1e-4, 1e-4), "tv")
    close(torch.autograd.grad(l1 + l2, img)[0], torch.autograd.grad(r1 + r2, img)[0], TOL[dtype], "tv grad")
    g = torch.Generator(device=DEVICE).manual_seed(0)
    params = sample_augment_params(IMAGES[0], *IMAGES[2:], same_on_batch=False, generator=g)
    out, exp = augment_images(img, params, backend="triton"), augment_images(img, params, backend="reference")
    gy = torch.randn_like(out)
    close(out, exp, TOL[dtype], "augment")
    close(torch.autograd.grad(out, img, gy)[0], torch.autograd.grad(exp, img, gy)[0], TOL[dtype], "augment grad")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_frozen_conv_under_autocast(dtype):
    conv = torch.nn.Conv2d(64, 128, 3, 2, 1, bias=False).to(DEVICE).to(memory_format=torch.channels_last)
    x = torch.randn(4, 64, 34, 30, device=DEVICE).to(memory_format=torch.channels_last).requires_grad_(True)
    with torch.autocast(DEVICE.type, dtype=dtype, enabled=dtype != torch.float32):
        ref = conv(x)
        conv.requires_grad_(False)
        out = frozen_conv2d(x, conv)
    gy = torch.randn_like(ref)
    close(out, ref, TOL[dtype], "output")
    close(torch.autograd.grad(out, x, gy)[0], torch.autograd.grad(ref, x, gy)[0], TOL[dtype], "input grad")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hcl_at_yolov3_neck_shapes(dtype):
    from fastdiode.ops.hcl import hcl_loss, hcl_loss_reference

    shapes = [(16, 1024, 13, 13), (16, 512, 26, 26), (16, 256, 52, 52)] if CUDA else [(2, 8, 13, 13), (2, 4, 6, 6)]
    s = [layout(torch.randn(sh, device=DEVICE).to(dtype), True).requires_grad_(True) for sh in shapes]
    t = [layout(torch.randn(sh, device=DEVICE).to(dtype), True) for sh in shapes]
    out, exp = hcl_loss(s, t, backend="triton"), hcl_loss_reference(s, t)
    close(out, exp, (1e-4, 1e-4), "loss")
    for a, b in zip(torch.autograd.grad(out, s), torch.autograd.grad(exp, s)):
        close(a, b, TOL[dtype], "grad")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dense_kd_at_yolov3_head_shapes(dtype):
    from fastdiode.ops.kd import dense_kd_loss, dense_kd_loss_reference

    grids, batch = ((13, 26, 52), 16) if CUDA else ((3, 5), 2)
    maps = [torch.randn(batch, 3 * 85, n, n, device=DEVICE).to(dtype).view(batch, 3, 85, n, n).permute(0, 1, 3, 4, 2)
            for n in grids for _ in range(2)]
    s = [m.detach().requires_grad_(True) for m in maps[0::2]]
    out, exp = dense_kd_loss(s, maps[1::2], 2.0, backend="triton"), dense_kd_loss_reference(s, maps[1::2], 2.0)
    close(out, exp, (1e-4, 1e-4), "loss")
    for a, b in zip(torch.autograd.grad(out, s), torch.autograd.grad(exp, s)):
        close(a, b, TOL[dtype], "grad")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_roi_crop_at_dicod_shapes(dtype):
    from fastdiode.ops.roi_crop import roi_crop, roi_crop_reference

    batch, k, side, size = (16, 32, 416, 32) if CUDA else (2, 3, 20, 8)
    g = torch.Generator().manual_seed(3)
    images = torch.randn(batch, 3, side, side, generator=g).to(DEVICE, dtype).requires_grad_(True)
    lo = torch.rand(batch, k, 2, generator=g) * 0.8 - 0.1  # some boxes stick out of the image
    random_boxes = torch.cat([lo, lo + torch.rand(batch, k, 2, generator=g) * 0.35 + 0.05], -1)
    # fp32 sample positions differ from affine_grid's by an ulp (3e-5 px at 416), times image slopes up to ~8
    tol = (5e-4, 1e-4) if dtype == torch.float32 else TOL[dtype]
    for boxes, check_boxes in ((random_boxes, False), (kink_free_boxes(batch, k, side, size, g), True)):
        boxes = boxes.to(DEVICE).requires_grad_(True)
        for pool in (None, 8):
            out = roi_crop(images, boxes, size, pool, backend="triton")
            exp = roi_crop_reference(images, boxes, size, pool)
            close(out, exp, tol, "crops")
            grad = torch.randn(exp.shape, generator=g).to(DEVICE)
            got = torch.autograd.grad(out, (images, boxes), grad)
            want = torch.autograd.grad(exp, (images, boxes), grad)
            close(got[0], want[0], tol, "d/dimages")
            if check_boxes:
                scale = want[1].abs().max().item() + 1.0
                assert (got[1] - want[1]).abs().max().item() <= (1e-3 if dtype == torch.float32 else 5e-2) * scale


def kink_free_boxes(batch: int, k: int, side: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Boxes whose every sample lies a quarter pixel off the pixel grid: sides a whole multiple m of ``size``
    pixels, left and top edges at a whole pixel + 3/4, so sample j sits at edge - 1/2 + m (j + 1/2). Bilinear
    sampling's derivative in the position jumps at whole pixels, where an ulp of rounding in the position
    (the kernel's and affine_grid's differ) picks either slope: the box gradient is only comparable away
    from them."""
    m = torch.randint(1, max(2, side // size // 2 + 1), (batch, k, 2), generator=generator)
    start = torch.randint(-size // 2, side - size, (batch, k, 2), generator=generator) + 0.75
    return torch.cat([start / side, (start + m * size) / side], -1)


@pytest.mark.parametrize("dtype, channels_last", GRID)
@pytest.mark.parametrize("per_channel", [False, True])
def test_lsq_fake_quant_at_yolov3_shapes(dtype, channels_last, per_channel):
    """The LSQ kernels against the reference at a YOLOv3 416² conv input (per tensor) or a weight (per channel)."""
    from fastdiode.ops.lsq import lsq_fake_quant, lsq_fake_quant_reference

    shape = ((16, 256, 52, 52) if not per_channel else (512, 256, 3, 3)) if CUDA else (3, 5, 7, 6)
    x = layout(torch.randn(shape, device=DEVICE) * 2, channels_last).to(dtype).requires_grad_(True)
    steps = torch.rand(shape[0] if per_channel else 1, device=DEVICE) * 0.3 + 0.2
    steps.requires_grad_(True)
    grad = torch.randn(shape, device=DEVICE)
    outs = []
    for fn, kw in ((lsq_fake_quant, {"backend": "triton"}), (lsq_fake_quant_reference, {})):
        y = fn(x, steps, -8, 7, 0.01, **kw)
        outs.append((y, *torch.autograd.grad((y.float() * grad).sum(), (x, steps))))
    (y, gx, gs), (y_ref, gx_ref, gs_ref) = outs
    close(y, y_ref, TOL[dtype], "y")
    close(gx, gx_ref, TOL[dtype], "dL/dx")
    torch.testing.assert_close(gs, gs_ref, rtol=1e-2 if dtype == torch.float32 else 5e-2, atol=1e-2)


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device")
def test_cuda_graph_step_gives_the_eager_step():  # last in the file: a failed capture can upset the CUDA RNG
    """A 2-stage inversion with each stage's step captured in a CUDA graph gives the eager step's losses and
    images (fp32; a second batch replays the captured graphs)."""
    from fastdiode.config import load_config
    from fastdiode.inversion import DiodeInverter, InversionConfig, one_box_targets
    from fastdiode.loading import randomized_detector

    targets = one_box_targets(6, 80, 8, torch.Generator().manual_seed(0))
    results = []
    for graph in ("false", "true"):
        cfg = load_config(InversionConfig, None, [
            "stages.resolution=[64,96]", "stages.batch_size=[6,4]", "stages.lr=[0.1,0.01]", "stages.lr_min=[0,0]",
            "stages.iterations=[12,8]", "stages.warmup=[0.2,0.2]", "stages.betas=[[0,0],[0,0]]",
            "loss.first_bn_coef=[2,0]", "augment.jitter=[8,12]", "fp.enabled=false", "job.log_every=4",
            "run.precision=fp32", "run.compile=false", f"job.cuda_graph={graph}", "loss.cosine_layer_decay=true"])
        torch.manual_seed(0)
        inverter = DiodeInverter(randomized_detector("yolov3-tiny", None, 80).to(DEVICE), cfg, DEVICE)
        results.append([inverter.invert(targets, seed=s) for s in (0, 1)])
        inverter.close()
        if graph == "true":  # a capture that fails falls back to eager with a warning: that is a failure here
            assert inverter.captured_shapes == inverter.step_shapes != []
    for (eager, graphed) in zip(*results):
        a = torch.tensor([[h[k] for k in ("total", "det", "bn")] for h in eager.history])
        b = torch.tensor([[h[k] for k in ("total", "det", "bn")] for h in graphed.history])
        close(b, a, (1e-3, 1e-3), "losses")
        close(graphed.images, eager.images, (2e-2, 0.0), "images")
