import pytest
import torch
import torch.nn.functional as F

from fastdiode.losses import DICODClsLoss, DICODLocLoss, crop_logits, dicod_cls_loss, dicod_loc_loss
from fastdiode.models import build_model
from fastdiode.models.boxes import wh_iou, xywh_to_xyxy
from fastdiode.models.resnet import ResNet
from fastdiode.ops.roi_crop import roi_crop_reference


def setup(seed=0, classes=4, size=64):
    torch.manual_seed(seed)
    det = build_model("yolo-micro", num_classes=classes, width=0.25).eval()
    images = torch.rand(2, 3, size, size)
    preds = [p.detach().requires_grad_(True) for p in det(images)]
    targets = torch.full((2, 3, 5), -1.0)
    targets[0, 0] = torch.tensor([1, 0.40, 0.45, 0.30, 0.35])
    targets[0, 1] = torch.tensor([3, 0.70, 0.30, 0.15, 0.20])
    targets[1, 0] = torch.tensor([0, 0.50, 0.55, 0.60, 0.50])
    return det, images, preds, targets


def positives(preds, targets, heads, iou_t=0.225):
    """Brute force: every (head, image, target, anchor) the YOLO assignment makes a positive, with its cell."""
    out = []
    for hi, (p, head) in enumerate(zip(preds, heads)):
        h, w = p.shape[2:4]
        anchors = head.anchors / head.stride
        for b in range(targets.shape[0]):
            for k in range(targets.shape[1]):
                t = targets[b, k]
                if t[0] < 0:
                    continue
                gwh = torch.tensor([t[3] * w, t[4] * h])
                for a in range(len(anchors)):
                    if wh_iou(gwh, anchors[a:a + 1])[0] > iou_t:
                        out.append((hi, b, k, a, min(int(t[2] * h), h - 1), min(int(t[1] * w), w - 1)))
    return out


@pytest.mark.parametrize("teacher_target", ["softmax", "normalized_sigmoid"])
def test_classification_distillation_against_a_loop_over_positives(teacher_target):
    """fastdiode's softmax teacher, and the authors' normalised-sigmoid teacher, each against a written-out loop."""
    det, images, preds, targets = setup()
    teacher = torch.randn(2, 3, 4)
    t = 2.0
    loss = dicod_cls_loss(preds, targets, det.heads, teacher, t, teacher_target=teacher_target)
    pos = positives(preds, targets, det.heads)
    assert len(pos) > 2
    total = 0.0
    for hi, b, k, a, j, i in pos:
        s = preds[hi][b, a, j, i, 5:]
        p = torch.sigmoid(s / t) / torch.sigmoid(s / t).sum()  # the normalised sigmoid
        if teacher_target == "softmax":
            q = torch.softmax(teacher[b, k] / t, -1)
        else:
            q = torch.sigmoid(teacher[b, k] / t) / torch.sigmoid(teacher[b, k] / t).sum()
        total = total + (q * (q.log() - p.log())).sum()
    expected = total / len(pos) * t * t
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    got = torch.autograd.grad(loss, preds)
    want = torch.autograd.grad(expected, preds)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)


def test_classification_distillation_is_zero_when_the_student_agrees():
    """Student class logits equal to T·log(softmax(t/T)) - c reproduce the teacher's categorical: KL 0 at the limit
    σ(x) ≈ exp(x) for very negative x."""
    det, images, preds, targets = setup()
    teacher = torch.randn(2, 3, 4)
    agree = [p.detach().clone() for p in preds]
    for hi, b, k, a, j, i in positives(preds, targets, det.heads):
        agree[hi][b, a, j, i, 5:] = 2.0 * (torch.log_softmax(teacher[b, k] / 2.0, -1) - 20.0)
    assert dicod_cls_loss(agree, targets, det.heads, teacher, 2.0).item() < 1e-6


def test_localization_distillation_against_a_loop_over_positives():
    det, images, preds, targets = setup()
    clf = ResNet(4, width=8, depths=(1,), input_size=16).eval()
    loss = dicod_loc_loss(preds, targets, det.heads, images, clf.stem, 16, backend="reference")
    pos = positives(preds, targets, det.heads)
    total = 0.0
    for hi, b, k, a, j, i in pos:
        p, head = preds[hi], det.heads[hi]
        h, w = p.shape[2:4]
        t = p[b, a, j, i]
        anchor = head.anchors[a] / head.stride
        box = torch.stack([(i + t[0].sigmoid()) / w, (j + t[1].sigmoid()) / h, t[2].exp() * anchor[0] / w,
                           t[3].exp() * anchor[1] / h])
        crop = roi_crop_reference(images[b:b + 1], xywh_to_xyxy(box)[None, None], 16)[0]
        gt = roi_crop_reference(images[b:b + 1], xywh_to_xyxy(targets[b, k, 1:5])[None, None], 16)[0]
        pix = (F.adaptive_avg_pool2d(crop, 4) - F.adaptive_avg_pool2d(gt, 4)).abs().mean()
        feat = (F.adaptive_avg_pool2d(clf.stem(crop), 8) - F.adaptive_avg_pool2d(clf.stem(gt), 8)).abs().mean()
        total = total + pix + feat
    expected = total / len(pos)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    got = torch.autograd.grad(loss, preds)
    want = torch.autograd.grad(expected, preds)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    # the gradient reaches the box of a positive, and nothing but the boxes of positives
    for hi, b, _, a, j, i in pos:
        assert got[hi][b, a, j, i, :4].abs().sum() > 0
    mask = torch.zeros_like(got[0][..., 0], dtype=torch.bool)
    for hi, b, _, a, j, i in pos:
        if hi == 0:
            mask[b, a, j, i] = True
    assert got[0][~mask].abs().max() == 0 and got[0][..., 4:].abs().max() == 0


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_localization_fast_paths_match_the_reference(backend):
    det, images, preds, targets = setup()
    clf = ResNet(4, width=8, depths=(1,), input_size=16).eval()
    out = dicod_loc_loss(preds, targets, det.heads, images, clf.stem, 16, backend=backend)
    exp = dicod_loc_loss(preds, targets, det.heads, images, clf.stem, 16, backend="reference")
    torch.testing.assert_close(out, exp, rtol=1e-4, atol=1e-6)


def test_no_targets_give_zero_and_no_nan():
    det, images, preds, targets = setup()
    targets = torch.full_like(targets, -1.0)
    clf = ResNet(4, width=8, depths=(1,), input_size=16).eval()
    assert dicod_cls_loss(preds, targets, det.heads, torch.randn(2, 3, 4)).item() == 0.0
    assert dicod_loc_loss(preds, targets, det.heads, images, clf.stem, 16).item() == 0.0


def test_modules_and_crop_logits():
    det, images, preds, targets = setup()
    clf = ResNet(4, width=8, depths=(1,), input_size=16)
    logits = crop_logits(clf.eval(), images, targets)
    assert logits.shape == (2, 3, 4)
    cls_loss = DICODClsLoss(clf)(preds, targets, images, det.heads)
    torch.testing.assert_close(cls_loss, dicod_cls_loss(preds, targets, det.heads, logits, 2.0))
    loc = DICODLocLoss(clf)
    assert loc(preds, targets, images, det.heads) > 0
    assert not any(p.requires_grad for p in clf.parameters()) and not clf.training
    torch.nn.ModuleList([loc]).train()  # a trainer's .train() on whatever holds the loss
    assert loc.training and not clf.training  # the frozen classifier's BN keeps its running statistics


def test_bad_teacher_logits_shape():
    det, images, preds, targets = setup()
    with pytest.raises(ValueError, match="teacher_logits"):
        dicod_cls_loss(preds, targets, det.heads, torch.randn(2, 3, 5))


def test_localization_clamp_is_the_authors_border_rule(monkeypatch):
    """clamp=True crops every box (ground truth and predicted) clamped to the image, as the authors do; by default
    boxes are cropped as they are, zeros outside the image."""
    from fastdiode.losses import dicod

    det, images, preds, targets = setup()
    targets[0, 0] = torch.tensor([1, 0.05, 0.45, 0.30, 0.35])  # reaches past the left edge
    stem = ResNet(4, width=8, depths=(1,), input_size=16).eval().stem
    seen = []
    crop = dicod.roi_crop
    monkeypatch.setattr(dicod, "roi_crop", lambda im, boxes, *a, **kw: seen.append(boxes) or crop(im, boxes, *a, **kw))
    for clamp in (False, True):
        seen.clear()
        dicod_loc_loss(preds, targets, det.heads, images, stem, 16, clamp=clamp)
        inside = all(((b >= 0) & (b <= 1)).all() for b in seen)
        assert inside == clamp and len(seen) == 1 + len(preds)
