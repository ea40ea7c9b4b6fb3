import pytest
import torch

from fastdiode.losses import mimic_loss
from fastdiode.models import build_model


def maps(seed, shapes=((2, 3, 2, 2, 9), (2, 3, 4, 4, 9))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes]


def test_equals_the_formula_on_random_maps():
    s, t = maps(0), maps(1)
    expected = sum(((a - b) ** 2).sum() / a.numel() for a, b in zip(s, t))
    torch.testing.assert_close(mimic_loss(s, t), expected)


def test_zero_when_student_equals_teacher_and_no_teacher_gradient():
    s = [m.requires_grad_(True) for m in maps(0)]
    t = [m.clone().requires_grad_(True) for m in maps(0)]
    loss = mimic_loss(s, t)
    assert loss.item() == 0.0
    (loss + sum(m.sum() for m in s)).backward()
    assert all(m.grad is None for m in t)


def test_head_layouts_must_match():
    student = build_model("yolo-micro", num_classes=10)(torch.rand(1, 3, 64, 64))
    teacher = build_model("yolo-micro", num_classes=5)(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"level 0: student head map \(1, 3, 4, 4, 15\) vs teacher \(1, 3, 4, 4, 10\)"):
        mimic_loss(student, teacher)
    with pytest.raises(ValueError, match="2 detection levels, the teacher 1"):
        mimic_loss(student, teacher[:1])
