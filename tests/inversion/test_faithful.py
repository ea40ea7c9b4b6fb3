"""Where fastdiode follows the authors' DIODE code: the objective's composition, the backbone BN layers, the
per-stage weights, the Y_fp schedule, filters and early exit, and targets whose class the teacher lacks."""
import pytest
import torch

from fastdiode.inversion import DiodeInverter, LabelTargets, sample_false_positives
from fastdiode.inversion.config import FalsePositiveConfig
from fastdiode.inversion.targets import clip_to_image
from fastdiode.losses import BNStatLoss, yolo_loss
from fastdiode.models import build_model
from fastdiode.ops import bn_stat_loss_reference, tv_prior_reference
from tests.helpers import tiny_config

NO_AUGMENT = ["augment.jitter=[0]", "augment.flip_p=0", "augment.brightness=0", "augment.contrast=0",
              "augment.erase_p=0"]
ONE_STAGE = ["stages.resolution=[32]", "stages.batch_size=[2]", "stages.lr=[0.0]", "stages.lr_min=[0]",
             "stages.iterations=[1]", "stages.warmup=[0]", "stages.betas=[[0,0]]", "job.log_every=1"]


def test_objective_is_the_authors_composition(teacher):
    """L = m·L_det + α_BN·Σ_l r_l + c_first·r_0 + α_TV·TV + α_l2·‖x‖: the first-layer term outside α_BN."""
    cfg = tiny_config(*ONE_STAGE, *NO_AUGMENT, "loss.det=0.5", "loss.bn=0.1", "loss.first_bn_coef=[2.0]",
                      "loss.tv_l1=75", "loss.tv_l2=0.3", "loss.l2=0.01", "run.backend=reference")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[[1.0, 0.5, 0.5, 0.4, 0.3]] + [[-1.0, 0, 0, 0, 0]] * 3] * 2)
    inverter = DiodeInverter(teacher, cfg)
    logged = inverter.invert(targets, seed=0, init=x).history[0]
    inverter.close()

    inputs = []
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
             for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        preds = teacher(x)
    for h in hooks:
        h.remove()
    bns = [m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    r = torch.stack([bn_stat_loss_reference(a, bn.running_mean, bn.running_var) for a, bn in zip(inputs, bns)])
    det, _ = yolo_loss(preds, targets, teacher)
    tv_l1, tv_l2 = tv_prior_reference(x)
    l2 = x.flatten(1).norm(dim=1).mean()
    expected = 0.5 * det + 0.1 * r.sum() + 2.0 * r[0] + 75 * tv_l1 + 0.3 * tv_l2 + 0.01 * l2
    assert logged["bn_first"] == pytest.approx(r[0].item(), rel=1e-4)
    assert logged["bn"] == pytest.approx(r.sum().item(), rel=1e-4)
    assert logged["total"] == pytest.approx(expected.item(), rel=1e-4)
    # what fastdiode computed before (first layer inside the α_BN scale) differs by 2.0·r_0·(1 - 0.1)
    assert abs(logged["total"] - (expected - 2.0 * 0.9 * r[0]).item()) > 1e-3


def test_per_stage_det_weight_and_bn_layer_count(teacher):
    cfg = tiny_config(*NO_AUGMENT[1:], "augment.jitter=[0,0]", "loss.det=[0.5,1.0]", "loss.bn_num_layers=[-1,3]",
                      "stages.lr=[0,0]", "stages.iterations=[1,1]", "job.log_every=1", "run.backend=reference")
    assert [cfg.det_weight(s) for s in (0, 1)] == [0.5, 1.0]
    inverter = DiodeInverter(teacher, cfg)
    history = inverter.invert(torch.tensor([[[1.0, 0.5, 0.5, 0.4, 0.3]] + [[-1.0, 0, 0, 0, 0]] * 3] * 4), 0).history
    layers = inverter.objective.bn_loss.layer_values
    inverter.close()
    last = history[-1]  # stage 1: only the first 3 BN layers enter L_BN
    assert last["bn"] == pytest.approx(layers[:3].sum().item(), rel=1e-4)
    for h in history:
        m = 0.5 if h["stage"] == 0 else 1.0
        rest = h["total"] - m * h["det"] - 0.1 * h["bn"] - (2.0 if h["stage"] == 0 else 0.0) * h["bn_first"]
        assert rest == pytest.approx(75 * h["tv_l1"] + 1e-7 * h["l2"], rel=1e-4, abs=1e-4)
    with pytest.raises(ValueError, match="loss.det: 3 values, but stages.resolution has 2 stages"):
        tiny_config("loss.det=[1,1,1]")


def test_backbone_is_darknet53_on_yolov3_spp():
    model = build_model("yolov3-spp", num_classes=80)
    with BNStatLoss(model, layers="backbone") as loss:
        names = loss.layer_names
    assert len(names) == 52 and names[0] == "blocks.0.bn" and names[-1] == "blocks.73.bn"
    tiny = build_model("yolov3-tiny", num_classes=80)
    with BNStatLoss(tiny, layers="backbone") as loss:
        assert loss.layer_names == [f"blocks.{i}.bn" for i in (0, 2, 4, 6, 8, 10, 12)]


def test_fp_schedule_is_the_authors_and_early_exit_cuts_the_stage():
    cfg = tiny_config("fp.enabled=true", "fp.warmup=8", "fp.every=4", "fp.stop=20", "stages.iterations=[24,6]")
    assert [n for n in range(1, 31) if cfg.fp.samples_after(n)] == [8, 12, 16, 20]
    assert cfg.run_iterations() == [24, 6]
    cut = tiny_config("fp.enabled=true", "fp.stop=20", "fp.early_exit=true", "stages.iterations=[24,6]")
    assert cut.run_iterations() == [20, 6]


def test_early_exit_ends_the_stage_at_stop(teacher):
    cfg = tiny_config("fp.enabled=true", "fp.warmup=4", "fp.every=4", "fp.stop=12", "fp.early_exit=true",
                      "stages.iterations=[20,3]", "job.log_every=5")
    inverter = DiodeInverter(teacher, cfg)
    result = inverter.invert(torch.tensor([[[1.0, 0.5, 0.5, 0.4, 0.3]] + [[-1.0, 0, 0, 0, 0]] * 3] * 4), 0)
    inverter.close()
    assert max(h["step"] for h in result.history if h["stage"] == 0) == 12
    assert max(h["step"] for h in result.history if h["stage"] == 1) == 3


class FixedDetections:
    """A teacher whose ``detect`` returns the given (n, 6) rows, best first, for one image."""

    def __init__(self, rows):
        self.rows = torch.tensor(rows, dtype=torch.float32)

    def __call__(self, images):
        return []

    def detect(self, preds, conf_thres, iou_thres, max_det, multi_label=False, min_wh=0.0):
        return [self.rows]


def test_fp_keeps_a_valid_box_when_better_ones_are_filtered():
    """The capacity applies after the overlap and area filters: the three best predictions sit on the existing
    target or are too large, and the fourth still fills the free row."""
    teacher = FixedDetections([
        [10, 10, 50, 50, 0.9, 1],  # on the existing target
        [11, 11, 51, 51, 0.8, 2],  # on it too
        [0, 0, 100, 100, 0.7, 3],  # covers the whole image (area > max_area)
        [60, 60, 90, 90, 0.6, 4],  # valid
    ])
    start = torch.tensor([[[0.0, 0.3, 0.3, 0.4, 0.4], [-1.0, 0, 0, 0, 0]]])
    out = sample_false_positives(teacher, torch.zeros(1, 3, 100, 100), start)
    torch.testing.assert_close(out[0, 1], torch.tensor([4.0, 0.75, 0.75, 0.3, 0.3]))


def test_fp_clip_modes():
    """'image' clips to the image and measures the clipped area; 'zero' (the authors') clamps at 0 only and
    measures the unclipped box."""
    teacher = FixedDetections([[-20, 40, 10, 110, 0.9, 1]])  # 30 x 70 px, 10 x 60 px inside
    start = torch.tensor([[[-1.0, 0, 0, 0, 0]]])
    images = torch.zeros(1, 3, 100, 100)
    clipped = sample_false_positives(teacher, images, start, FalsePositiveConfig(min_area=0.1))
    torch.testing.assert_close(clipped[0, 0], torch.tensor([-1.0, 0, 0, 0, 0]))  # 6% of the image is inside
    clipped = sample_false_positives(teacher, images, start, FalsePositiveConfig(min_area=0.05))
    torch.testing.assert_close(clipped[0, 0], torch.tensor([1.0, 0.05, 0.7, 0.1, 0.6]))
    zero = sample_false_positives(teacher, images, start,
                                  FalsePositiveConfig(min_area=0.1, clip="zero"))  # 21% unclipped
    torch.testing.assert_close(zero[0, 0], torch.tensor([1.0, 0.05, 0.75, 0.1, 0.7]))


def test_target_class_the_teacher_lacks_is_rejected(teacher, tmp_path):
    inverter = DiodeInverter(teacher, tiny_config())
    bad = torch.tensor([[[4.0, 0.5, 0.5, 0.4, 0.3]]] * 4)  # the teacher has classes 0..3
    with pytest.raises(ValueError, match=r"targets: target \(0, 0\) has class 4, but the teacher has 4 classes"):
        inverter.invert(bad, 0)
    inverter.close()
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    from fastdiode.data.images import write_png

    write_png(tmp_path / "images" / "a.png", torch.zeros(3, 8, 8))
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(ValueError, match=r"a.txt:2: class 7 is not below the model's 4 classes"):
        LabelTargets(tmp_path / "images", tmp_path / "labels", capacity=4, num_classes=4)


def test_written_labels_are_clipped_to_the_image():
    targets = torch.tensor([[[1.0, 0.05, 0.75, 0.1, 0.7], [2.0, 1.2, 0.5, 0.2, 0.2], [-1.0, 0, 0, 0, 0]]])
    torch.testing.assert_close(clip_to_image(targets), torch.tensor(
        [[[1.0, 0.05, 0.7, 0.1, 0.6], [-1.0, 0, 0, 0, 0], [-1.0, 0, 0, 0, 0]]]))
