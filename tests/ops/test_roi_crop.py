import pytest
import torch

from fastdiode.ops.roi_crop import roi_crop, roi_crop_reference
from tests.helpers import DEVICE, assert_close


def inputs(b, k, c, h, w, dtype=torch.float32, seed=0, outside=False):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, c, h, w, generator=g).to(DEVICE, dtype).requires_grad_(True)
    lo = torch.rand(b, k, 2, generator=g) * 0.7
    size = torch.rand(b, k, 2, generator=g) * 0.5 + 0.1
    if outside:  # shift boxes so they stick out of the image on some side
        lo = lo - 0.3
    boxes = torch.cat([lo, lo + size], -1).to(DEVICE, dtype).requires_grad_(True)
    return images, boxes


# (B, K, C, H, W, size, pool): odd sizes, non-square images, pooled and not, one box covering many pixels
CASES = [(2, 3, 3, 16, 16, 8, None), (1, 4, 2, 13, 11, 7, None), (2, 2, 3, 24, 20, 12, 4), (1, 1, 1, 9, 30, 6, 3),
         (2, 3, 3, 17, 19, 8, 8)]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("outside", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_matches_the_reference(backend, dtype, outside, case):
    b, k, c, h, w, size, pool = case
    images, boxes = inputs(b, k, c, h, w, dtype, outside=outside)
    out = roi_crop(images, boxes, size, pool, backend=backend)
    exp = roi_crop_reference(images, boxes, size, pool)
    assert out.shape == exp.shape == (b, k, c, pool or size, pool or size)
    assert_close(out, exp, dtype if dtype != torch.float32 else torch.float32, "crops")
    grad = torch.randn_like(exp)
    got = torch.autograd.grad(out, (images, boxes), grad)
    want = torch.autograd.grad(exp, (images, boxes), grad)
    assert_close(got[0], want[0], dtype, "d/dimages")
    scale = want[1].abs().max().item() + 1.0  # box gradients sum many samples: compare relative to their size
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    assert (got[1] - want[1]).abs().max().item() <= tol * scale, "d/dboxes"


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_padding_rows_are_zero_without_gradient(backend):
    images, boxes = inputs(2, 3, 3, 12, 12)
    boxes = boxes.detach().clone()
    boxes[1, 2] = 0.0  # an empty box: padding
    boxes.requires_grad_(True)
    valid = torch.tensor([[True, False, True], [True, True, False]], device=DEVICE)
    out = roi_crop(images, boxes, 6, valid=valid, backend=backend)
    assert out[0, 1].abs().max() == 0 and out[1, 2].abs().max() == 0 and out[0, 0].abs().max() > 0
    g_boxes = torch.autograd.grad(out.sum(), boxes)[0]
    assert g_boxes[0, 1].abs().max() == 0 and g_boxes[1, 2].abs().max() == 0
    default = roi_crop(images, boxes, 6, backend=backend)  # the empty box is padding by default
    assert default[1, 2].abs().max() == 0 and default[0, 1].abs().max() > 0


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_the_whole_image_at_its_own_size_is_the_image(backend):
    """align_corners=False: the S×S sample centres of the full box are the pixel centres."""
    images = torch.randn(2, 3, 10, 10, device=DEVICE)
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0]], [[0.5, 0.0, 1.0, 0.5]]], device=DEVICE)
    out = roi_crop(images, boxes, 10, backend=backend)
    torch.testing.assert_close(out[0, 0], images[0], atol=1e-5, rtol=1e-5)
    quarter = roi_crop(images, boxes, 5, backend=backend)[1, 0]
    torch.testing.assert_close(quarter, images[1, :, :5, 5:], atol=1e-5, rtol=1e-5)


def test_reference_gradcheck_to_image_and_boxes():
    images, boxes = inputs(1, 2, 2, 7, 6, torch.float64, outside=True)
    assert torch.autograd.gradcheck(lambda i, b: roi_crop_reference(i, b, 5), (images, boxes))
    assert torch.autograd.gradcheck(lambda i, b: roi_crop_reference(i, b, 4, pool=2), (images, boxes))


def test_fast_path_gradcheck_to_image_and_boxes():
    images, boxes = inputs(1, 2, 2, 7, 6, torch.float64, outside=True)
    assert torch.autograd.gradcheck(lambda i, b: roi_crop(i, b, 5, backend="torch"), (images, boxes))
    assert torch.autograd.gradcheck(lambda i, b: roi_crop(i, b, 4, pool=2, backend="torch"), (images, boxes))


def test_triton_box_gradient_is_deterministic():
    images, boxes = inputs(2, 4, 3, 16, 16)
    grads = [torch.autograd.grad(roi_crop(images, boxes, 8, 4, backend="triton").sum(), boxes)[0] for _ in range(2)]
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 0}, "size"), ({"size": -3}, "size"), ({"size": 8, "pool": 3}, "pool"),
])
def test_bad_arguments_name_themselves(kwargs, message):
    images, boxes = inputs(1, 2, 3, 8, 8)
    with pytest.raises(ValueError, match=message):
        roi_crop(images, boxes, **kwargs)


def test_bad_boxes_shape():
    images, _ = inputs(2, 2, 3, 8, 8)
    with pytest.raises(ValueError, match="boxes"):
        roi_crop(images, torch.rand(2, 3, 5), 4)
