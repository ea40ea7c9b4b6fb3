import pytest
import torch

from fastdiode.losses import ConvReg, DenseKDLoss, FGFILoss, FitNetLoss, KDLoss, ReviewKDLoss, fgfi_mask
from fastdiode.models.boxes import box_iou


def brute_force_mask(targets, anchors, stride, h, w, psi):
    b = targets.shape[0]
    mask = torch.zeros(b, h, w)
    for i in range(b):
        boxes = [r for r in targets[i].tolist() if r[0] >= 0]
        for _, xc, yc, bw, bh in boxes:
            gt = torch.tensor([[(xc - bw / 2) * w * stride, (yc - bh / 2) * h * stride,
                                (xc + bw / 2) * w * stride, (yc + bh / 2) * h * stride]])
            ious = torch.zeros(h, w, len(anchors))
            for y in range(h):
                for x in range(w):
                    for a, (aw, ah) in enumerate(anchors.tolist()):
                        cx, cy = (x + 0.5) * stride, (y + 0.5) * stride
                        ious[y, x, a] = box_iou(torch.tensor([[cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2]]),
                                                gt)[0, 0]
            best = ious.max()
            if best > 0:
                mask[i] = torch.maximum(mask[i], (ious > psi * best).any(-1).float())
    return mask


@pytest.mark.parametrize("h, w", [(6, 6), (4, 7)])
def test_fgfi_mask_matches_a_brute_force_loop(h, w):
    targets = torch.tensor([
        [[0.0, 0.3, 0.4, 0.3, 0.5], [2.0, 0.8, 0.7, 0.2, 0.2], [-1.0, 0, 0, 0, 0]],
        [[-1.0, 0, 0, 0, 0], [-1.0, 0, 0, 0, 0], [-1.0, 0, 0, 0, 0]],  # no boxes: no mask
    ])
    anchors = torch.tensor([[10.0, 13.0], [30.0, 22.0], [16.0, 40.0]])
    mask = fgfi_mask(targets, anchors, 8.0, h, w, 0.5)
    torch.testing.assert_close(mask, brute_force_mask(targets, anchors, 8.0, h, w, 0.5))
    assert mask[0].sum() > 0 and mask[1].sum() == 0


def test_fgfi_loss_is_masked_error_over_twice_the_cells():
    loss = FGFILoss([4], [6])
    torch.nn.init.zeros_(loss.adapters[0][0].weight)
    torch.nn.init.zeros_(loss.adapters[0][0].bias)  # adapter output 0: the loss is the teacher's masked energy
    targets = torch.tensor([[[1.0, 0.5, 0.5, 0.5, 0.5]]])
    teacher = torch.randn(1, 6, 4, 4)
    anchors, strides = [torch.tensor([[16.0, 16.0]])], [8.0]
    mask = fgfi_mask(targets, anchors[0], 8.0, 4, 4)
    expected = (teacher ** 2 * mask[:, None]).sum() / (2 * mask.sum())
    got = loss([torch.randn(1, 4, 4, 4)], [teacher], targets, anchors, strides)
    torch.testing.assert_close(got, expected)


def test_review_takes_any_channels_and_non_square_levels():
    student = [torch.randn(2, 8, 3, 5, requires_grad=True), torch.randn(2, 4, 6, 10, requires_grad=True)]
    teacher = [torch.randn(2, 16, 3, 5), torch.randn(2, 12, 6, 10)]
    review = ReviewKDLoss.from_features(student, teacher)
    adapted = review.adapt(student)
    assert [a.shape for a in adapted] == [t.shape for t in teacher]
    loss = review(student, teacher)
    loss.backward()
    assert all(s.grad is not None for s in student)
    assert review.abfs[1].att_conv[0].weight.grad is not None  # the second level fused the first's residual
    assert review.abfs[0].att_conv is None


@pytest.mark.parametrize("s_hw, t_hw", [((8, 8), (4, 4)), ((4, 4), (8, 8)), ((6, 6), (4, 4)), ((4, 4), (4, 4))])
def test_convreg_is_stride_aware(s_hw, t_hw):
    s, t = torch.randn(2, 3, *s_hw), torch.randn(2, 5, *t_hw)
    assert ConvReg(s.shape, t.shape)(s).shape == t.shape
    loss = FitNetLoss.from_features(s, t)(s.requires_grad_(True), t)
    loss.backward()
    assert loss > 0 and s.grad is not None


def test_convreg_refuses_a_smaller_map_it_cannot_grow():
    with pytest.raises(ValueError, match="fitnet: student map 3x3"):
        ConvReg((1, 2, 3, 3), (1, 2, 8, 8))


def test_kd_modules():
    s, t = torch.randn(2, 3, 4, 4, 7), torch.randn(2, 3, 4, 4, 7)
    assert DenseKDLoss(2.0, backend="reference")([s], [t]) > 0
    assert KDLoss(4.0)(torch.randn(3, 5), torch.randn(3, 5)) > 0
