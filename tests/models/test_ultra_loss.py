"""The fixed-shape YOLOv8/11 loss against a written-out re-statement of ultralytics 8.4's ``v8DetectionLoss``
(its ``preprocess``, ``TaskAlignedAssigner`` with ``nonzero`` indexing, ``BboxLoss`` and ``DFLoss``, line by line),
in float64; and the decode against a brute-force loop."""
import math

import pytest
import torch
import torch.nn.functional as F

from fastdiode.models import build_model
from fastdiode.models.ultra_decode import decode
from fastdiode.models.ultra_loss import v8_loss


# ---- the reference: ultralytics' code, with its data-dependent shapes ------------------------------------------
def ref_bbox_iou(box1, box2, eps=1e-7):
    (b1_x1, b1_y1, b1_x2, b1_y2), (b2_x1, b2_y1, b2_x2, b2_y2) = box1.chunk(4, -1), box2.chunk(4, -1)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    inter = (b1_x2.minimum(b2_x2) - b1_x1.maximum(b2_x1)).clamp_(0) * \
        (b1_y2.minimum(b2_y2) - b1_y1.maximum(b2_y1)).clamp_(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = b1_x2.maximum(b2_x2) - b1_x1.minimum(b2_x1)
    ch = b1_y2.maximum(b2_y2) - b1_y1.minimum(b2_y1)
    c2 = cw.pow(2) + ch.pow(2) + eps
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2).pow(2) + (b2_y1 + b2_y2 - b1_y1 - b1_y2).pow(2)) / 4
    v = 4 / math.pi**2 * ((w2 / h2).atan() - (w1 / h1).atan()).pow(2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - (rho2 / c2 + v * alpha)


def xywh2xyxy(x):
    xy, wh = x[..., :2], x[..., 2:] / 2
    return torch.cat((xy - wh, xy + wh), -1)


def xyxy2xywh(x):
    return torch.cat(((x[..., :2] + x[..., 2:4]) / 2, x[..., 2:4] - x[..., :2]), -1)


def ref_assign(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, nc, stride_val, topk=10, alpha=0.5,
               beta=6.0, eps=1e-9):
    bs, n_max = gt_bboxes.shape[:2]
    if n_max == 0:
        return (torch.zeros_like(pd_bboxes), torch.zeros_like(pd_scores),
                torch.zeros_like(pd_scores[..., 0], dtype=torch.bool))
    # select_candidates_in_gts
    gt_xywh = xyxy2xywh(gt_bboxes)
    wh_mask = gt_xywh[..., 2:] < stride_val
    gt_xywh[..., 2:] = torch.where((wh_mask * mask_gt).bool(), torch.tensor(stride_val, dtype=gt_xywh.dtype),
                                   gt_xywh[..., 2:])
    lt, rb = xywh2xyxy(gt_xywh).unsqueeze(2).chunk(2, 3)
    mask_in = (anc_points[:, 0] - lt[..., 0] > eps) & (anc_points[:, 1] - lt[..., 1] > eps) & \
        (rb[..., 0] - anc_points[:, 0] > eps) & (rb[..., 1] - anc_points[:, 1] > eps)
    # get_box_metrics
    na = pd_bboxes.shape[-2]
    metric_mask = (mask_in * mask_gt).bool()
    ind = metric_mask.nonzero(as_tuple=True)
    bbox_scores = pd_scores[ind[0], ind[2], gt_labels[ind[0], ind[1], 0].long()]
    overlap_values = ref_bbox_iou(gt_bboxes[ind[:2]], pd_bboxes[ind[0], ind[2]]).squeeze(-1).clamp_(0)
    overlaps = torch.zeros((bs, n_max, na), dtype=pd_bboxes.dtype)
    align = torch.zeros((bs, n_max, na), dtype=pd_scores.dtype)
    overlaps[ind] = overlap_values
    align[ind] = bbox_scores.pow(alpha) * overlap_values.pow(beta)
    # select_topk_candidates
    topk_idxs = torch.topk(align, topk, dim=-1, largest=True).indices
    topk_idxs.masked_fill_(~mask_gt.expand(-1, -1, topk).bool(), 0)
    count = torch.zeros(align.shape, dtype=torch.int8)
    count.scatter_add_(-1, topk_idxs, torch.ones_like(topk_idxs, dtype=torch.int8))
    count.masked_fill_(count > 1, 0)
    mask_pos = count * mask_in * mask_gt
    # select_highest_overlaps
    fg = mask_pos.sum(-2)
    multi = (fg.unsqueeze(1) > 1).expand(-1, n_max, -1)
    is_max = torch.zeros(mask_pos.shape, dtype=mask_pos.dtype)
    is_max.scatter_(1, overlaps.max(1).indices.unsqueeze(1), 1)
    mask_pos = torch.where(multi, is_max, mask_pos)
    fg, target_gt_idx = mask_pos.max(-2)
    # get_targets
    target_gt_idx = target_gt_idx + torch.arange(bs)[..., None] * n_max
    target_labels = gt_labels.long().flatten()[target_gt_idx].clamp_(0)
    target_bboxes = gt_bboxes.view(-1, 4)[target_gt_idx]
    target_scores = torch.zeros((*target_labels.shape, nc), dtype=torch.int8)
    target_scores.scatter_(2, target_labels.unsqueeze(-1), 1)
    target_scores = target_scores * (fg[:, :, None] > 0)
    align = align * mask_pos
    pos_align = align.amax(-1, keepdim=True)
    pos_overlaps = (overlaps * mask_pos).amax(-1, keepdim=True)
    norm = (align * pos_overlaps / (pos_align + eps)).amax(-2).unsqueeze(-1)
    return target_bboxes, target_scores * norm, fg.bool()


def ref_loss(preds, targets, strides, reg_max=16):
    """ultralytics' v8DetectionLoss on a batch given as (B, K, 5) padded targets (turned into its batch layout)."""
    b, no = preds[0].shape[:2]
    nc = no - 4 * reg_max
    flat = torch.cat([p.view(b, no, -1) for p in preds], 2)
    pred_distri, pred_scores = flat.split((4 * reg_max, nc), 1)
    pred_distri, pred_scores = pred_distri.permute(0, 2, 1).contiguous(), pred_scores.permute(0, 2, 1).contiguous()
    points, stride_t = [], []
    for p, s in zip(preds, strides):
        h, w = p.shape[2:]
        sy, sx = torch.meshgrid(torch.arange(h, dtype=p.dtype) + 0.5, torch.arange(w, dtype=p.dtype) + 0.5,
                                indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_t.append(torch.full((h * w, 1), s, dtype=p.dtype))
    anchor_points, stride_tensor = torch.cat(points), torch.cat(stride_t)
    imgsz = torch.tensor(preds[0].shape[2:], dtype=pred_scores.dtype) * strides[0]
    # preprocess: ultralytics' batch_idx / cls / bboxes rows, packed to (B, n_max, 5)
    rows = [(i, *r) for i in range(b) for r in targets[i].tolist() if r[0] >= 0]
    n_max = max([sum(1 for r in rows if r[0] == i) for i in range(b)] + [0])
    out = torch.zeros(b, n_max, 5, dtype=pred_scores.dtype)
    seen = [0] * b
    for i, *r in rows:
        out[i, seen[i]] = torch.tensor(r, dtype=out.dtype)
        seen[i] += 1
    out[..., 1:5] = xywh2xyxy(out[..., 1:5].mul_(imgsz[[1, 0, 1, 0]]))
    gt_labels, gt_bboxes = out.split((1, 4), 2)
    mask_gt = gt_bboxes.sum(2, keepdim=True).gt_(0.0)
    proj = torch.arange(reg_max, dtype=pred_distri.dtype)
    d = pred_distri.view(b, -1, 4, reg_max).softmax(3).matmul(proj)
    lt, rb = d.chunk(2, -1)
    pred_bboxes = torch.cat((anchor_points - lt, anchor_points + rb), -1)
    target_bboxes, target_scores, fg = ref_assign(
        pred_scores.detach().sigmoid(), pred_bboxes.detach() * stride_tensor, anchor_points * stride_tensor,
        gt_labels, gt_bboxes, mask_gt, nc, strides[1])
    tss = max(target_scores.sum(), 1)
    cls = F.binary_cross_entropy_with_logits(pred_scores, target_scores, reduction="none").sum() / tss
    target_bboxes = target_bboxes / stride_tensor
    weight = target_scores[fg].sum(-1, keepdim=True)
    iou = ref_bbox_iou(pred_bboxes[fg], target_bboxes[fg])
    box = ((1.0 - iou) * weight).sum() / tss
    x1y1, x2y2 = target_bboxes.chunk(2, -1)
    ltrb = torch.cat((anchor_points - x1y1, x2y2 - anchor_points), -1).clamp_(0, reg_max - 1 - 0.01)
    target = ltrb[fg].clamp_(0, reg_max - 1 - 0.01)
    tl = target.long()
    wl = tl + 1 - target
    logp = F.log_softmax(pred_distri[fg].view(-1, reg_max), dim=1)
    dfl = -(logp.gather(1, tl.view(-1, 1)).view(tl.shape) * wl +
            logp.gather(1, (tl + 1).view(-1, 1)).view(tl.shape) * (1 - wl)).mean(-1, keepdim=True)
    dfl = (dfl * weight).sum() / tss
    return torch.stack([box * 7.5, cls * 0.5, dfl * 1.5]) * b


# ---- cases ------------------------------------------------------------------------------------------------------
def pad(rows_per_image, k=5):
    t = torch.full((len(rows_per_image), k, 5), -1.0, dtype=torch.float64)
    for i, rows in enumerate(rows_per_image):
        for j, r in enumerate(rows):
            t[i, j] = torch.tensor(r, dtype=torch.float64)
    return t


CASES = {
    "random": pad([[(1, 0.4, 0.45, 0.3, 0.35), (3, 0.7, 0.3, 0.15, 0.2)], [(0, 0.55, 0.6, 0.45, 0.4)]]),
    "edges": pad([[(0, 0.04, 0.05, 0.08, 0.1), (2, 0.97, 0.5, 0.06, 0.9), (1, 0.5, 0.985, 0.9, 0.03)], []]),
    "competing": pad([[(0, 0.5, 0.5, 0.6, 0.6), (1, 0.52, 0.5, 0.58, 0.62), (2, 0.48, 0.52, 0.5, 0.5),
                       (3, 0.5, 0.5, 1.0, 1.0)], [(1, 0.3, 0.3, 0.2, 0.2)]]),
    "tiny": pad([[(0, 0.3, 0.3, 0.03, 0.02), (3, 0.6, 0.6, 0.08, 0.15)], [(2, 0.5, 0.5, 0.01, 0.01)]]),
    "empty": pad([[], []]),
}


@pytest.fixture(scope="module")
def maps():
    """Random head maps of a 4-class yolov8 at 128 px (levels 16, 8, 4), float64."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 64 + 4, s, s, generator=g, dtype=torch.float64) for s in (16, 8, 4)]


@pytest.mark.parametrize("case", list(CASES))
def test_loss_matches_ultralytics_written_out(maps, case):
    targets = CASES[case]
    a = [m.clone().requires_grad_(True) for m in maps]
    b = [m.clone().requires_grad_(True) for m in maps]
    total, parts = v8_loss(a, targets, [8.0, 16.0, 32.0])
    expected = ref_loss(b, targets, [8.0, 16.0, 32.0])
    torch.testing.assert_close(parts, expected.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(total, expected.sum(), rtol=1e-12, atol=1e-12)
    ga, gb = torch.autograd.grad(total, a), torch.autograd.grad(expected.sum(), b)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    if case == "empty":
        assert parts[0] == 0 and parts[2] == 0 and parts[1] > 0  # only the class term: every anchor background


def test_one_class_model():
    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(2, 65, s, s, generator=g, dtype=torch.float64) for s in (8, 4, 2)]
    targets = CASES["random"].clone()
    targets[..., 0] = torch.where(targets[..., 0] >= 0, 0.0, -1.0)
    torch.testing.assert_close(v8_loss(maps, targets, [8.0, 16.0, 32.0])[1], ref_loss(maps, targets, [8.0, 16.0, 32.0]))


def test_padding_rows_change_nothing(maps):
    wide = torch.cat([CASES["random"], torch.full((2, 7, 5), -1.0, dtype=torch.float64)], 1)
    torch.testing.assert_close(v8_loss(maps, wide, [8.0, 16.0, 32.0])[1], v8_loss(maps, CASES["random"],
                                                                                    [8.0, 16.0, 32.0])[1])


@pytest.mark.slow
def test_loss_compiles_with_fullgraph(maps):
    """No data-dependent shape and no host sync: dynamo captures the whole loss in one graph."""
    preds = [m.float().requires_grad_(True) for m in maps]
    targets = CASES["competing"].float()
    eager = v8_loss(preds, targets, [8.0, 16.0, 32.0])[0]
    compiled = torch.compile(lambda p, t: v8_loss(p, t, [8.0, 16.0, 32.0])[0], fullgraph=True, backend="aot_eager")
    out = compiled(preds, targets)
    torch.testing.assert_close(out, eager)
    for a, b in zip(torch.autograd.grad(out, preds), torch.autograd.grad(eager, preds)):
        torch.testing.assert_close(a, b)


def test_decode_and_detect_against_a_brute_force_loop():
    torch.manual_seed(0)
    model = build_model("yolov8-micro", num_classes=3).eval()
    maps = model(torch.rand(1, 3, 64, 64))
    boxes, scores = decode(maps, model.strides, model.reg_max)
    i = 0
    for p, stride in zip(maps, model.strides):
        for y in range(p.shape[2]):
            for x in range(p.shape[3]):
                bins = p[0, :64, y, x].view(4, 16).softmax(-1)
                lt_rb = (bins * torch.arange(16.0)).sum(-1)
                cx, cy = x + 0.5, y + 0.5
                box = torch.stack([cx - lt_rb[0], cy - lt_rb[1], cx + lt_rb[2], cy + lt_rb[3]]) * stride
                torch.testing.assert_close(boxes[0, i], box, rtol=1e-5, atol=1e-4)
                torch.testing.assert_close(scores[0, i], p[0, 64:, y, x].sigmoid())
                i += 1
    assert i == boxes.shape[1]
    dets = model.detect(maps, conf_thres=0.3, iou_thres=0.7)[0]
    best, cls = scores[0].max(-1)
    kept = best > 0.3
    assert len(dets) <= kept.sum() and (dets[:, 4] > 0.3).all()
    for det in dets:  # every kept box is one of the decoded ones, with its best class and score
        j = ((boxes[0] - det[:4]).abs().sum(-1) < 1e-4).nonzero().flatten()
        assert len(j) >= 1 and det[4] == pytest.approx(best[j[0]].item()) and det[5] == cls[j[0]]
