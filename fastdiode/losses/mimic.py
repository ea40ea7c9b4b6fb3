"""Mimic learning (method.md §7): the student regresses the teacher's raw head outputs on the same batch."""
from __future__ import annotations

import torch

__all__ = ["check_head_layouts", "mimic_loss"]


def check_head_layouts(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> None:
    """A clear error when the student's head maps cannot mimic the teacher's (scales, anchors, grid, classes)."""
    if len(student) != len(teacher):
        raise ValueError(f"mimic: the student has {len(student)} detection scales, the teacher {len(teacher)}; "
                         "mimic learning needs identical head layouts")
    for i, (s, t) in enumerate(zip(student, teacher)):
        if s.shape != t.shape:
            raise ValueError(f"mimic: scale {i}: student head map {tuple(s.shape)} vs teacher {tuple(t.shape)} "
                             "(batch, anchors, grid H, grid W, 5 + classes); mimic learning needs identical "
                             "head layouts")


def mimic_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """L_mimic = sum over scales of mean((P_student - P_teacher)^2) on raw outputs (xy/wh logits, objectness
    and class logits; no sigmoid, no mask). The teacher's maps carry no gradient; the result is fp32."""
    check_head_layouts(student, teacher)
    return sum(torch.mean((s.float() - t.detach().float()) ** 2) for s, t in zip(student, teacher))
