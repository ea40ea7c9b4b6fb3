import pytest
import torch

from fastdiode.losses import yolo_loss
from fastdiode.models import build_model
from fastdiode.models.boxes import wh_iou


@pytest.fixture(scope="module")
def model():
    return build_model("yolo-micro", num_classes=4, width=0.125).eval().requires_grad_(False)


TARGETS = torch.tensor([
    [[1.0, 0.40, 0.45, 0.30, 0.35], [3.0, 0.70, 0.30, 0.15, 0.20], [-1.0, 0.0, 0.0, 0.0, 0.0]],
    [[0.0, 0.55, 0.60, 0.45, 0.40], [-1.0, 0.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0, 0.0]],
])


def perfect_predictions(model, targets, size=64):
    """Head maps whose box at every matched (cell, anchor) is exactly the target."""
    preds = []
    for head in model.heads:
        g = size // head.stride
        p = torch.zeros(targets.shape[0], len(head.anchors), g, g, 5 + head.num_classes)
        anchors = head.anchors / head.stride
        for b, rows in enumerate(targets):
            for cls, xc, yc, w, h in rows.tolist():
                if cls < 0:
                    continue
                gx, gy, gw, gh = xc * g, yc * g, w * g, h * g
                for a in (wh_iou(torch.tensor([gw, gh]), anchors) > 0.225).nonzero().flatten().tolist():
                    p[b, a, int(gy), int(gx), 0:2] = torch.logit(torch.tensor([gx % 1, gy % 1]))
                    p[b, a, int(gy), int(gx), 2:4] = torch.log(torch.tensor([gw, gh]) / anchors[a])
        preds.append(p)
    return preds


def test_perfect_boxes_have_zero_box_loss(model):
    _, (l_box, l_obj, l_cls) = yolo_loss(perfect_predictions(model, TARGETS), TARGETS, model)
    assert l_box.abs() < 1e-5 and l_obj > 0 and l_cls > 0


def test_padding_rows_change_nothing(model):
    preds = [torch.randn(2, 3, 64 // h.stride, 64 // h.stride, 9) for h in model.heads]
    padded = torch.cat([TARGETS, torch.tensor([[[-1.0, 0, 0, 0, 0]] * 4] * 2)], 1)
    a, parts_a = yolo_loss(preds, TARGETS, model)
    b, parts_b = yolo_loss(preds, padded, model)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(parts_a, parts_b)


def test_no_targets_gives_only_objectness(model):
    preds = [torch.randn(2, 3, 64 // h.stride, 64 // h.stride, 9) for h in model.heads]
    _, (l_box, l_obj, l_cls) = yolo_loss(preds, torch.full((2, 1, 5), -1.0), model)
    assert l_box == 0 and l_cls == 0 and l_obj > 0


def test_gradcheck_float64(model):
    preds = [torch.randn(1, 3, 32 // h.stride, 32 // h.stride, 9, dtype=torch.float64, requires_grad=True)
             for h in model.heads]
    assert torch.autograd.gradcheck(lambda *p: yolo_loss(list(p), TARGETS[:1].double(), model)[0], preds)


def test_gradient_reaches_the_image_not_the_model(model):
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    yolo_loss(model(x), TARGETS, model)[0].backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_bad_targets(model):
    preds = [torch.randn(2, 3, 2, 2, 9), torch.randn(2, 3, 4, 4, 9)]
    with pytest.raises(ValueError, match="targets: expected a padded"):
        yolo_loss(preds, torch.zeros(2, 5), model)
    with pytest.raises(ValueError, match="preds: 1 head maps, but the model has 2 YOLO layers"):
        yolo_loss(preds[:1], TARGETS, model)


@pytest.mark.slow
def test_compiles_with_fullgraph(model):
    preds = [torch.randn(2, 3, 64 // h.stride, 64 // h.stride, 9, requires_grad=True) for h in model.heads]
    eager = yolo_loss(preds, TARGETS, model)[0]
    compiled = torch.compile(lambda p, t: yolo_loss(p, t, model)[0], fullgraph=True, backend="aot_eager")
    out = compiled(preds, TARGETS)
    torch.testing.assert_close(out, eager)
    g1 = torch.autograd.grad(out, preds)
    g2 = torch.autograd.grad(eager, preds)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_one_class_model_has_no_class_term():
    """As the authors' code: with one class, objectness says it all; the class logits get no gradient."""
    one = build_model("yolo-micro", num_classes=1, width=0.125).eval().requires_grad_(False)
    targets = TARGETS.clone()
    targets[..., 0] = torch.where(targets[..., 0] >= 0, 0.0, -1.0)
    preds = [p.requires_grad_(True) for p in (torch.randn(2, 3, g, g, 6) for g in (4, 8))]
    total, (l_box, l_obj, l_cls) = yolo_loss(preds, targets, one)
    assert l_cls == 0 and total.item() == pytest.approx((3.54 * l_box + 64.3 * l_obj).item())
    total.backward()
    assert all(p.grad[..., 5:].abs().sum() == 0 for p in preds) and preds[0].grad[..., 4].abs().sum() > 0
