import torch

from fastdiode.models.boxes import box_iou, generalized_iou, wh_iou
from fastdiode.models.postprocess import batched_nms, nms, postprocess


def random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 40 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g), torch.randint(0, 3, (n,), generator=g)


def iou_one(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def brute_force_nms(boxes, scores, classes, thres):
    keep = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if all(classes[i] != classes[j] or iou_one(boxes[i], boxes[j]) <= thres for j in keep):
            keep.append(i)
    return keep


def test_box_iou_matches_scalar_formula():
    a, _, _ = random_boxes(7, 0)
    b, _, _ = random_boxes(5, 1)
    expected = torch.tensor([[iou_one(x.tolist(), y.tolist()) for y in b] for x in a])
    torch.testing.assert_close(box_iou(a, b), expected)


def test_giou_of_identical_boxes_is_one_and_of_distant_boxes_negative():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert generalized_iou(a, a).item() == 1.0
    assert generalized_iou(a, torch.tensor([[4.0, 0.0, 6.0, 2.0]])).item() < 0


def test_wh_iou():
    torch.testing.assert_close(wh_iou(torch.tensor([2.0, 2.0]), torch.tensor([[2.0, 2.0], [1.0, 4.0]])),
                               torch.tensor([1.0, 2 / 6]))


def test_nms_matches_brute_force():
    for seed in range(5):
        boxes, scores, classes = random_boxes(60, seed)
        for thres in (0.3, 0.6):
            expected = brute_force_nms(boxes.tolist(), scores.tolist(), classes.tolist(), thres)
            assert batched_nms(boxes, scores, classes, thres).tolist() == expected
            assert nms(boxes, scores, thres).tolist() == brute_force_nms(boxes.tolist(), scores.tolist(),
                                                                         [0] * 60, thres)


def test_postprocess_on_decoded_predictions():
    # two overlapping boxes of class 0 and one of class 1 at the same place
    p = torch.zeros(1, 3, 7)
    p[0, :, :4] = torch.tensor([[10, 10, 50, 50], [12, 12, 50, 50], [10, 10, 50, 50]], dtype=torch.float)
    p[0, :, 4] = torch.tensor([0.9, 0.8, 0.7])
    p[0, :, 5:] = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    (det,) = postprocess(p, conf_thres=0.1, iou_thres=0.5)
    assert det[:, 5].tolist() == [0.0, 1.0]
    torch.testing.assert_close(det[:, 4], torch.tensor([0.9, 0.7]))
    (none,) = postprocess(p, conf_thres=0.95)
    assert none.shape == (0, 6)
