"""A YOLOv8/11 teacher inverts through the same objective as the YOLOv3 family: BN statistics of every
Conv-BN-SiLU block (fused), the v8 task loss, one-box targets and Y_fp through its detect(). (The toy teacher's BN
statistics come from a few smooth images; under the augmentation's brightness and contrast draws its 57 BN layers
make the per-step loss too noisy to compare two log lines, so the augmentation is off here: the augmentation
itself is tested on its own and with the YOLOv3 teachers.)"""
import pytest
import torch

from fastdiode.inversion import DiodeInverter
from fastdiode.models import build_model
from tests.helpers import calibrate_bn, targets, tiny_config


@pytest.mark.parametrize("name, layers", [("yolov8-micro", "all"), ("yolo11-micro", "backbone")])
def test_anchor_free_teacher_inverts(name, layers):
    torch.manual_seed(0)
    teacher = calibrate_bn(build_model(name, num_classes=4))
    # fp.max_area above 1: the untrained DFL head predicts boxes about the image's size, which the default cap drops
    cfg = tiny_config("fp.enabled=true", "fp.warmup=10", "fp.every=10", "fp.stop=20", "fp.conf=0.0", "fp.max_area=1.01",
                      "loss.bn=1.0",
                      "loss.tv_l1=1.0", f"loss.bn_layers={layers}", "stages.iterations=[20,4]",
                      "stages.lr=[0.01,0.005]", "augment.jitter=[0,0]", "augment.flip_p=0", "augment.brightness=0",
                      "augment.contrast=0", "augment.erase_p=0")
    inverter = DiodeInverter(teacher, cfg)
    bn = inverter.objective.bn_loss
    assert len(bn._tapped) == len(bn.layer_names)  # every selected BN runs fused with its SiLU
    if layers == "backbone":
        assert len(bn.layer_names) < sum(isinstance(m, torch.nn.BatchNorm2d) for m in teacher.modules())
    result = inverter.invert(targets(), seed=0)
    inverter.close()
    stage0 = [h for h in result.history if h["stage"] == 0]
    assert result.failed is None and result.images.shape == (4, 3, 64, 64)
    assert stage0[-1]["total"] < stage0[0]["total"] and stage0[-1]["bn"] < stage0[0]["bn"]
    assert stage0[0]["det"] > 0
    assert (result.targets[..., 0] >= 0).sum() > 4  # Y_fp added the teacher's detections
