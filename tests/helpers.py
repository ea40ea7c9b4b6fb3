"""Helpers shared by the tests (one module: test files never import each other or a conftest). The env
setup (Triton interpreter without CUDA) lives in conftest.py, which pytest loads before any test module."""
import socket

import torch
import torch.nn.functional as F

from fastdiode.config import load_config
from fastdiode.data.digits import DigitsSpec
from fastdiode.inversion import InversionConfig, one_box_targets
from fastdiode.models import build_model

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# (atol, rtol) for comparing a fused op with its reference on the same low-precision input: both accumulate
# in fp32, so values agree closely; gradients are rounded once to the input dtype.
TOLERANCES = {
    torch.float32: (1e-5, 1e-4),
    torch.float16: (2e-3, 4e-3),
    torch.bfloat16: (1e-2, 2e-2),
}


def make_input(shape, dtype, channels_last=False, scale=1.0, offset=0.0, seed=0):
    """A fresh random tensor on the test device, optionally channels_last, requiring grad."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * scale + offset).to(DEVICE, dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_(True)


def assert_close(actual, expected, dtype, what=""):
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def assert_same_layout(actual, expected):
    """Same memory format (NCHW or channels_last); strides of size-1 dimensions do not matter."""
    for fmt in (torch.contiguous_format, torch.channels_last):
        assert actual.is_contiguous(memory_format=fmt) == expected.is_contiguous(memory_format=fmt), (
            f"layout differs: strides {actual.stride()} vs {expected.stride()}")


# ---- inversion ---------------------------------------------------------------------------------------------
def calibrated_teacher(num_classes=4, seed=0):
    """A tiny teacher whose BN running statistics come from smooth synthetic images, so that noise has
    different statistics and inversion has something reachable to match."""
    torch.manual_seed(seed)
    model = build_model("yolo-micro", num_classes=num_classes, width=0.25)
    return calibrate_bn(model, seed)


def calibrate_bn(model, seed=0, size=64):
    """Set the BN running statistics of ``model`` from smooth random images; returns it in eval mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(4):
            model(F.interpolate(torch.rand(16, 3, 8, 8, generator=g), size=size, mode="bilinear"))
    return model.eval()


TINY = ["stages.resolution=[32,64]", "stages.batch_size=[4,3]", "stages.lr=[0.05,0.01]", "stages.lr_min=[0,0]",
        "stages.iterations=[40,10]", "stages.warmup=[0.1,0.1]", "stages.betas=[[0,0],[0,0]]",
        "loss.first_bn_coef=[2,0]", "augment.jitter=[4,8]", "fp.enabled=false", "job.log_every=10",
        "targets.capacity=4", "teacher.num_classes=4"]


def tiny_config(*overrides):
    return load_config(InversionConfig, None, TINY + list(overrides))


def targets(n=4, capacity=4, seed=1, num_classes=4):
    """One-box targets for ``n`` images."""
    return one_box_targets(n, num_classes, capacity, torch.Generator().manual_seed(seed))


# ---- distillation ------------------------------------------------------------------------------------------
TINY_DIGITS = DigitsSpec(train=16, val=8, proxy=8, size=64, min_digit=16, max_digit=32, max_digits=2)


def train_args(out, data, *extra):
    """Overrides of a small CPU run: yolo-micro (width 0.25) at 64 px, torch loader in-process."""
    return ["student.model=yolo-micro", "student.width=0.25", "student.num_classes=10", f"data.train={data}",
            "data.loader=torch", "data.workers=0", "train.img_size=64", "train.eval_size=64", "train.batch_size=4",
            "train.steps=6", "train.log_every=1", "train.checkpoint_every=3", "train.eval_every=0",
            "train.channels_last=false", f"train.out={out}", *extra]


def free_port() -> int:
    """A TCP port free right now, for a torchrun rendezvous (fixed ports collide when tests run in parallel)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
