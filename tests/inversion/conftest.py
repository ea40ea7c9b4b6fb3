"""A tiny teacher whose BN running statistics come from smooth synthetic images, so that noise has
different statistics and inversion has something reachable to match."""
import pytest
import torch
import torch.nn.functional as F

from fastdiode.config import load_config
from fastdiode.inversion import InversionConfig
from fastdiode.models import build_model


def calibrated_teacher(num_classes=4, seed=0):
    torch.manual_seed(seed)
    model = build_model("yolo-micro", num_classes=num_classes, width=0.25)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(4):
            model(F.interpolate(torch.rand(16, 3, 8, 8, generator=g), size=64, mode="bilinear"))
    return model.eval()


TINY = ["stages.resolution=[32,64]", "stages.batch_size=[4,3]", "stages.lr=[0.05,0.01]", "stages.lr_min=[0,0]",
        "stages.iterations=[40,10]", "stages.warmup=[0.1,0.1]", "stages.betas=[[0,0],[0,0]]",
        "loss.first_bn_coef=[2,0]", "augment.jitter=[4,8]", "fp.enabled=false", "job.log_every=10",
        "targets.capacity=4", "teacher.num_classes=4"]


def tiny_config(*overrides):
    return load_config(InversionConfig, None, TINY + list(overrides))


@pytest.fixture(scope="module")
def teacher():
    return calibrated_teacher()
