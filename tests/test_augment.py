import pytest
import torch

from fastdiode.augment import AugmentParams, DiodeAugment, augment_boxes, augment_images, sample_augment_params
from tests.helpers import DEVICE


def gen(seed):
    return torch.Generator(device=DEVICE).manual_seed(seed)


def test_draws_are_on_the_device_and_in_range():
    p = sample_augment_params(64, 40, 48, jitter=5, same_on_batch=False, generator=gen(0))
    for t in (p.shift_y, p.shift_x, p.flip, p.brightness, p.contrast, p.erase):
        assert t.device.type == DEVICE.type and t.shape[0] == 64
    assert p.shift_y.abs().max() <= 5 and p.shift_x.abs().max() <= 5
    assert p.shift_y.unique().numel() > 1
    y0, x0, y1, x1 = p.erase.unbind(1)
    erased = y1 > y0
    assert 0 < erased.sum() < 64
    assert (y0 >= 0).all() and (x0 >= 0).all() and (y1 <= 40).all() and (x1 <= 48).all()
    area = ((y1 - y0) * (x1 - x0))[erased].float() / (40 * 48)
    assert area.min() >= 0.01 and area.max() <= 0.25  # U(0.02, 0.2) of the image, up to pixel rounding


def test_same_on_batch_shares_jitter_and_flip():
    p = sample_augment_params(16, 32, 32, same_on_batch=True, generator=gen(1))
    assert p.shift_y.unique().numel() == 1 and p.shift_x.unique().numel() == 1 and p.flip.unique().numel() == 1
    assert p.brightness.unique().numel() == 16


def test_default_jitter_scales_with_resolution():
    p = sample_augment_params(256, 160, 160, same_on_batch=False, generator=gen(2))
    assert p.shift_y.abs().max() == 20


def test_switches_off():
    p = sample_augment_params(8, 16, 16, jitter=0, flip_p=0, brightness=0, contrast=0, erase_p=0, generator=gen(3))
    x = torch.rand(8, 3, 16, 16, device=DEVICE)
    assert torch.equal(augment_images(x, p, backend="reference"), x)


def test_replay_is_exact():
    aug = DiodeAugment(jitter=4, same_on_batch=False)
    x = torch.rand(4, 3, 16, 16, device=DEVICE)
    a, _ = aug(x, generator=gen(5))
    b, _ = aug(x, params=aug.last_params)
    c, _ = aug(x, generator=gen(5))
    assert torch.equal(a, b) and torch.equal(a, c)


def draw_box(h, w, box):
    """A (1, 1, H, W) image of zeros with the pixels of a normalised box set to 1 (box on pixel edges)."""
    _, xc, yc, bw, bh = box
    img = torch.zeros(1, 1, h, w, device=DEVICE)
    img[..., round((yc - bh / 2) * h):round((yc + bh / 2) * h), round((xc - bw / 2) * w):round((xc + bw / 2) * w)] = 1
    return img


def pixel_box(img):
    ys, xs = torch.nonzero(img[0, 0] > 0.5, as_tuple=True)
    return ys.min().item(), xs.min().item(), ys.max().item() + 1, xs.max().item() + 1


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("shift", [(3, -5), (-6, 7), (0, 0)])
def test_box_moves_exactly_with_the_pixels(backend, flip, shift):
    h, w = 32, 40
    box = (2.0, 16 / 40, 14 / 32, 12 / 40, 10 / 32)  # pixels x 10..22, y 9..19: no wrap for these shifts
    img = draw_box(h, w, box)
    p = AugmentParams(torch.tensor([shift[0]], device=DEVICE), torch.tensor([shift[1]], device=DEVICE),
                      torch.tensor([flip], device=DEVICE), torch.zeros(1, device=DEVICE),
                      torch.ones(1, device=DEVICE), torch.zeros(1, 4, dtype=torch.long, device=DEVICE), h, w)
    out = augment_images(img, p, backend=backend)
    moved = augment_boxes(torch.tensor([[box]], device=DEVICE), p)[0, 0]
    y0, x0, y1, x1 = pixel_box(out)
    assert moved[0].item() == 2.0
    torch.testing.assert_close(moved[1:].cpu(), torch.tensor([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h,
                                                             (x1 - x0) / w, (y1 - y0) / h]), atol=1e-6, rtol=0)


def test_box_that_wraps_is_clipped_to_the_visible_part():
    h, w = 32, 32
    box = (1.0, 28 / 32, 16 / 32, 8 / 32, 8 / 32)  # x 24..32, touching the right edge
    img = draw_box(h, w, box)
    p = AugmentParams(torch.zeros(1, dtype=torch.long, device=DEVICE), torch.tensor([4], device=DEVICE),
                      torch.tensor([False], device=DEVICE), torch.zeros(1, device=DEVICE),
                      torch.ones(1, device=DEVICE), torch.zeros(1, 4, dtype=torch.long, device=DEVICE), h, w)
    out = augment_images(img, p, backend="reference")
    cls, xc, yc, bw, bh = augment_boxes(torch.tensor([[box]], device=DEVICE), p)[0, 0].tolist()
    assert cls == 1.0 and bw == pytest.approx(4 / 32) and xc == pytest.approx(30 / 32)
    assert out[0, 0, 12:20, 28:32].eq(1).all()  # the clipped box is all object
    assert out[0, 0, 12:20, 0:4].eq(1).all()  # the part that wrapped round is outside the box


def test_degenerate_and_padding_rows_become_padding():
    p = AugmentParams(torch.zeros(2, dtype=torch.long, device=DEVICE), torch.tensor([10, 0], device=DEVICE),
                      torch.tensor([False, True], device=DEVICE), torch.zeros(2, device=DEVICE),
                      torch.ones(2, device=DEVICE), torch.zeros(2, 4, dtype=torch.long, device=DEVICE), 20, 20)
    boxes = torch.tensor([
        [[3.0, 0.975, 0.5, 0.05, 0.2], [4.0, 0.5, 0.5, 0.2, 0.2]],  # first pushed out of the image
        [[-1.0, 0.0, 0.0, 0.0, 0.0], [5.0, 0.25, 0.5, 0.1, 0.2]],  # padding stays padding; flip
    ], device=DEVICE)
    out = augment_boxes(boxes, p)
    assert out[0, 0].tolist() == [-1.0, 0.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(out[0, 1], torch.tensor([4.0, 0.95, 0.5, 0.1, 0.2], device=DEVICE))  # clipped
    assert out[1, 0].tolist() == [-1.0, 0.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(out[1, 1], torch.tensor([5.0, 0.75, 0.5, 0.1, 0.2], device=DEVICE))


def test_box_drop_rules():
    """'side' (fastdiode): under 2 px wide or high goes, at every step; 'area' (the authors'): under 1 px² goes,
    only in images the draw shifts."""
    p = AugmentParams(torch.zeros(2, dtype=torch.long, device=DEVICE), torch.tensor([0, 19], device=DEVICE),
                      torch.tensor([False, False], device=DEVICE), torch.zeros(2, device=DEVICE),
                      torch.ones(2, device=DEVICE), torch.zeros(2, 4, dtype=torch.long, device=DEVICE), 20, 20)
    thin = [1.0, 0.5, 0.5, 1.5 / 20, 0.4]  # 1.5 px wide, 12 px² in image 0 (not shifted)
    tiny = [2.0, 0.06, 0.5, 0.1, 0.1]  # 2 x 2 px
    boxes = torch.tensor([[thin, tiny], [thin, tiny]], device=DEVICE)
    side = augment_boxes(boxes, p, drop="side")
    area = augment_boxes(boxes, p, drop="area")
    assert side[0, 0, 0] == -1 and area[0, 0, 0] == 1  # thin: side drops it, area keeps it (unshifted)
    assert area[0, 1, 0] == 2  # unshifted: never dropped by the area rule
    shifted = augment_boxes(torch.tensor([[[3.0, 0.985, 0.5, 0.05, 0.05]]] * 2, device=DEVICE), p, drop="area")
    assert shifted[0, 0, 0] == 3 and shifted[1, 0, 0] == -1  # 1 x 1 px pushed out by 19 px: < 1 px² left
    with pytest.raises(ValueError, match="drop='both'"):
        augment_boxes(boxes, p, drop="both")


def test_erasing_zeroes_a_rectangle_and_keeps_boxes():
    p = AugmentParams(torch.zeros(1, dtype=torch.long, device=DEVICE), torch.zeros(1, dtype=torch.long, device=DEVICE),
                      torch.tensor([False], device=DEVICE), torch.zeros(1, device=DEVICE),
                      torch.ones(1, device=DEVICE), torch.tensor([[2, 3, 6, 9]], device=DEVICE), 10, 12)
    x = torch.rand(1, 3, 10, 12, device=DEVICE) + 0.5
    for backend in ("reference", "torch", "triton"):
        out = augment_images(x, p, backend=backend)
        assert out[..., 2:6, 3:9].eq(0).all() and (out.eq(0).sum() == 3 * 4 * 6)
    boxes = torch.tensor([[[1.0, 0.5, 0.5, 0.5, 0.5]]], device=DEVICE)
    assert torch.equal(augment_boxes(boxes, p), boxes)


def test_bad_input():
    p = sample_augment_params(2, 8, 8, generator=gen(0))
    with pytest.raises(ValueError, match="params: drawn for a batch of 2 at 8x8"):
        augment_images(torch.rand(2, 3, 8, 9, device=DEVICE), p)
    with pytest.raises(ValueError, match="boxes: expected a padded \\(B, K, 5\\)"):
        augment_boxes(torch.rand(2, 4, device=DEVICE), p)
    with pytest.raises(ValueError, match="flip_p"):
        sample_augment_params(2, 8, 8, flip_p=1.5)


def test_step_tables_select_rows_on_the_device_and_reload_in_place():
    """A table of draws (``steps``) gives each step a well-formed draw, selected alike by an int or a device
    tensor; a single draw is the one-step table's row; ``copy_`` reloads a table in place."""
    gen = lambda: torch.Generator(device=DEVICE).manual_seed(4)  # noqa: E731
    table = sample_augment_params(3, 32, 40, jitter=5, same_on_batch=True, generator=gen(), steps=7)
    assert table.shift_y.shape == (7, 3) and table.erase.shape == (7, 3, 4)
    for t in range(7):
        row, on_device = table.at(t), table.at(torch.tensor([t], device=DEVICE))
        for name in ("shift_y", "shift_x", "flip", "brightness", "contrast", "erase"):
            assert torch.equal(getattr(row, name), getattr(on_device, name))
        assert (row.shift_y == row.shift_y[0]).all() and row.shift_y.abs().max() <= 5
    single = sample_augment_params(3, 32, 40, jitter=5, generator=gen())
    first = sample_augment_params(3, 32, 40, jitter=5, generator=gen(), steps=1).at(0)
    assert torch.equal(single.erase, first.erase) and torch.equal(single.brightness, first.brightness)
    address = table.erase.data_ptr()
    other = sample_augment_params(3, 32, 40, jitter=5, generator=torch.Generator(device=DEVICE).manual_seed(9),
                                  steps=7)
    table.copy_(other)
    assert table.erase.data_ptr() == address and torch.equal(table.erase, other.erase)
    with pytest.raises(ValueError, match="height"):
        table.copy_(sample_augment_params(3, 16, 40, generator=gen(), steps=7))
    with pytest.raises(ValueError, match="steps"):
        sample_augment_params(3, 32, 40, steps=0)
