import math

import pytest
import torch

from fastdiode.config import ConfigError, load_config
from fastdiode.inversion import DiodeInverter, InversionConfig, sample_false_positives
from fastdiode.inversion.config import FalsePositiveConfig
from fastdiode.models.boxes import box_iou, xywh_to_xyxy
from fastdiode.runtime.schedule import lr_at
from tests.helpers import targets, tiny_config


def run(teacher, cfg, seed=3, n=4):
    inverter = DiodeInverter(teacher, cfg)
    try:
        return inverter.invert(targets(n, cfg.targets.capacity), seed)
    finally:
        inverter.close()


def test_two_stage_inversion_lowers_the_losses(teacher):
    result = run(teacher, tiny_config())
    first = [h for h in result.history if h["stage"] == 0][0]
    last = [h for h in result.history if h["stage"] == 0][-1]
    assert result.failed is None and result.images.shape == (4, 3, 64, 64)
    assert 0 <= result.images.min() and result.images.max() <= 1
    assert last["total"] < first["total"] and last["bn"] < 0.8 * first["bn"]
    assert len(result.stage_losses) == 2 and len(result.seconds) == 2
    assert sorted({h["chunk"] for h in result.history if h["stage"] == 1}) == [0, 1]  # 4 images in chunks of 3


def test_deterministic_per_seed(teacher):
    cfg = tiny_config("stages.iterations=[6,3]")
    a, b, c = run(teacher, cfg, seed=5), run(teacher, cfg, seed=5), run(teacher, cfg, seed=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.images, c.images)


def test_teacher_gets_no_gradients_and_hooks_come_off(teacher):
    run(teacher, tiny_config("stages.iterations=[3,2]"))
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(len(m._forward_pre_hooks) == 0 for m in teacher.modules())
    assert all(b.stat_tap is None for b in teacher.conv_blocks())  # the fused BN taps come off too


def test_init_from_given_images(teacher):
    cfg = tiny_config("stages.iterations=[2,1]", "stages.lr=[0,0]")
    init = torch.full((4, 3, 32, 32), 0.25)
    inverter = DiodeInverter(teacher, cfg)
    result = inverter.invert(targets(), seed=0, init=init)
    inverter.close()
    torch.testing.assert_close(result.images, torch.full((4, 3, 64, 64), 0.25))  # lr 0: only resized


def test_non_finite_loss_is_reported(teacher):
    result = run(teacher, tiny_config("loss.l2=.inf", "job.log_every=2"))
    assert result.failed is not None and "stage 0" in result.failed


def test_false_positive_sampling_adds_filtered_boxes_up_to_capacity(teacher):
    images = torch.rand(4, 3, 64, 64)
    start = targets(4, capacity=3)
    out = sample_false_positives(teacher, images, start, FalsePositiveConfig(conf=0.0, iou=0.35, min_area=0.01,
                                                                         max_area=0.85))
    assert torch.equal(out[:, 0], start[:, 0])  # existing targets are kept
    added = out[:, 1:]
    valid = added[..., 0] >= 0
    assert valid.sum() > 0 and (out[..., 0] >= 0).sum(1).max() <= 3
    area = added[..., 3] * added[..., 4]
    assert ((area > 0.01) & (area < 0.85))[valid].all()
    for i in range(4):
        if valid[i].any():
            iou = box_iou(xywh_to_xyxy(added[i, valid[i], 1:]), xywh_to_xyxy(start[i, :1, 1:]))
            assert (iou < 0.35).all()


def test_false_positive_sampling_during_inversion_respects_capacity(teacher):
    cfg = tiny_config("fp.enabled=true", "fp.warmup=5", "fp.every=5", "fp.stop=30", "fp.conf=0.0",
                      "targets.capacity=3", "stages.iterations=[20,5]")
    result = run(teacher, cfg)
    counts = (result.targets[..., 0] >= 0).sum(1)
    assert counts.max() <= 3 and counts.sum() > 4


def test_lr_schedule():
    assert lr_at(0, 100, 1.0, 0.0, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 0.0, 0.1) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 0.0, 0.1) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, 0.2, 0.0) == pytest.approx(0.2, abs=1e-3)
    assert lr_at(50, 100, 1.0, 0.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize("overrides, match", [
    (["stages.reslution=[32]"], "unknown config key stages.reslution; valid keys of stages: resolution, batch_size"),
    (["colour=1"], "unknown config key colour; valid keys: teacher, stages"),
    (["stages.batch_size=[4]"], "stages.batch_size: 1 values, but stages.resolution has 2 stages"),
    (["stages.batch_size=[4,0]"], "stages.batch_size: expected positive values"),
    (["stages.lr=fast"], "stages.lr: expected a list"),
    (["targets.sampler=boxes"], "targets.sampler: 'boxes' is not one of onebox, labels"),
    (["stages.resolution=[30,64]"], "multiples of 32"),
    (["nokey"], "expected key=value"),
])
def test_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(*overrides)


def test_default_config_is_the_paper():
    cfg = load_config(InversionConfig)
    assert cfg.stages.resolution == [160, 320, 416] and cfg.stages.batch_size == [256, 96, 48]
    assert cfg.stages.lr == [0.2, 0.002, 0.0002] and cfg.stages.iterations == [2500, 1500, 1000]
    assert (cfg.loss.tv_l1, cfg.loss.bn, cfg.loss.l2) == (75.0, 0.1, 1e-7)
    assert (cfg.fp.warmup, cfg.fp.every, cfg.fp.stop, cfg.fp.conf, cfg.fp.iou) == (800, 100, 2800, 0.2, 0.35)


@pytest.mark.parametrize("name", ["diode_yolov3_coco", "diode_reference_code"])
def test_shipped_configs_load(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml"
    cfg = load_config(InversionConfig, path)
    if name == "diode_yolov3_coco":
        assert cfg == load_config(InversionConfig, None, ["job.out=runs/diode_yolov3_coco"])  # paper == defaults
    else:
        assert cfg.stages.resolution == [160, 320] and cfg.stages.betas[1] == [0.9, 0.999]
        assert cfg.loss.bn_layers == "backbone" and cfg.stages.lr_min == [0.0, 0.0005]
