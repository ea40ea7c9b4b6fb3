"""The detector seam: a small anchor-free detector that is not a Darknet inverts, distils, evaluates and
checkpoints through the same engines, with no change to them."""
import json

import torch
import torch.nn.functional as F
from torch import nn

from fastdiode.config import load_config
from fastdiode.data.digits import build_digits
from fastdiode.distill import TrainConfig, run_training
from fastdiode.inversion import DiodeInverter
from fastdiode.models import checkpoint
from fastdiode.models.detector import Detector
from fastdiode.models.postprocess import postprocess
from fastdiode.runtime import RunContext
from tests.helpers import TINY_DIGITS, calibrate_bn, targets, tiny_config, train_args


def conv_bn(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class TinyAnchorFree(nn.Module):
    """One stride-8 map; per cell: objectness, box (centre offset in the cell, log size in cells), classes.
    A box is assigned to the cell holding its centre; the loss is fixed-shape and sync-free."""

    def __init__(self, num_classes: int = 4, width: int = 16, input_size: int = 64):
        super().__init__()
        self.num_classes, self.width, self.input_size, self.name = num_classes, width, input_size, "tiny-anchor-free"
        self.backbone = nn.Sequential(conv_bn(3, width, 2), conv_bn(width, 2 * width, 2),
                                      conv_bn(2 * width, 2 * width, 2))
        self.neck = conv_bn(2 * width, 2 * width, 1)
        self.head = nn.Conv2d(2 * width, 5 + num_classes, 1)

    def forward(self, x):
        return [self.head(self.neck(self.backbone(x))).permute(0, 2, 3, 1)]  # (B, H, W, 5 + C)

    def task_loss(self, preds, targets):
        p = preds[0].float()
        b, h, w, _ = p.shape
        valid = (targets[..., 0] >= 0).float()
        gx, gy = targets[..., 1] * w, targets[..., 2] * h
        cx, cy = gx.long().clamp(0, w - 1), gy.long().clamp(0, h - 1)
        bi = torch.arange(b, device=p.device)[:, None].expand_as(cx)
        obj = torch.zeros_like(p[..., 0]).index_put((bi, cy, cx), valid, accumulate=True).clamp(max=1)
        ps = p[bi, cy, cx]
        box_t = torch.stack([gx - cx, gy - cy, (targets[..., 3] * w).clamp_min(1e-3).log(),
                             (targets[..., 4] * h).clamp_min(1e-3).log()], -1)
        box_p = torch.cat([ps[..., :2].sigmoid(), ps[..., 2:4]], -1)
        n = valid.sum().clamp_min(1)
        l_box = (F.smooth_l1_loss(box_p, box_t, reduction="none").sum(-1) * valid).sum() / n
        l_obj = F.binary_cross_entropy_with_logits(p[..., 4], obj)
        onehot = F.one_hot(targets[..., 0].long().clamp_min(0), self.num_classes).float()
        l_cls = (F.binary_cross_entropy_with_logits(ps[..., 5:], onehot, reduction="none").mean(-1) * valid).sum() / n
        return l_box + l_obj + l_cls, torch.stack([l_box, l_obj, l_cls]).detach()

    def detect(self, preds, conf_thres=0.001, iou_thres=0.6, max_det=300, multi_label=False, min_wh=0.0):
        p = preds[0].float()
        b, h, w, d = p.shape
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        stride = self.input_size / w
        xy = (p[..., :2].sigmoid() + torch.stack([gx, gy], -1).to(p)) * stride
        wh = p[..., 2:4].clamp(max=8).exp() * stride
        decoded = torch.cat([xy - wh / 2, xy + wh / 2, p[..., 4:].sigmoid()], -1).view(b, -1, d)
        return postprocess(decoded, conf_thres, iou_thres, max_det, multi_label=multi_label, min_wh=min_wh)

    def feature_points(self):
        return {"backbone": ["backbone.2"], "neck": ["neck"]}

    def checkpoint_spec(self):
        return {"architecture": "tiny-anchor-free", "name": self.name, "width": self.width}


checkpoint.register_architecture("tiny-anchor-free",
                                 lambda spec, size: TinyAnchorFree(spec["num_classes"], spec["width"], size))


def test_it_is_a_detector():
    assert isinstance(TinyAnchorFree(), Detector)


def test_inversion_engine_inverts_it():
    torch.manual_seed(0)
    teacher = calibrate_bn(TinyAnchorFree(num_classes=4))
    cfg = tiny_config("fp.enabled=true", "fp.warmup=10", "fp.every=10", "fp.stop=30", "fp.conf=0.0", "loss.bn=1.0",
                      "loss.tv_l1=1.0")
    inverter = DiodeInverter(teacher, cfg)
    result = inverter.invert(targets(), seed=0)
    inverter.close()
    stage0 = [h for h in result.history if h["stage"] == 0]
    assert result.failed is None and result.images.shape == (4, 3, 64, 64)
    assert stage0[-1]["total"] < stage0[0]["total"] and stage0[-1]["bn"] < stage0[0]["bn"]
    assert (result.targets[..., 0] >= 0).sum() > 4  # Y_fp went through its detect()


def test_trainer_distils_evaluates_and_checkpoints_it(tmp_path):
    digits = build_digits(tmp_path / "digits", TINY_DIGITS, progress=False)
    torch.manual_seed(0)
    teacher, student = TinyAnchorFree(10).eval(), TinyAnchorFree(10, width=8)
    cfg = load_config(TrainConfig, None, train_args(tmp_path / "run", digits["train"], f"data.val={digits['val']}",
                                                    "teacher=unused", "loss.label=0.5"))
    summary = run_training(cfg, student, teacher, RunContext(torch.device("cpu")), [str(i) for i in range(10)],
                           progress=False)
    assert summary["steps"] == 6 and summary["final_eval"] is not None
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["mimic"] > 0 and logged[0]["label"] > 0
    again = checkpoint.load(tmp_path / "run" / "last")
    assert isinstance(again, TinyAnchorFree) and again.width == 8
    for a, b in zip(again.state_dict().values(), student.state_dict().values()):
        torch.testing.assert_close(a, b)
