"""Mimic learning (method.md §7): the student regresses the teacher's raw head outputs on the same batch."""
from __future__ import annotations

import torch

__all__ = ["check_head_layouts", "mimic_loss"]


LAYOUT_HINT = ("mimic learning needs identical head layouts: choose a student of the teacher's family (a YOLOv8/11 "
               "name such as yolov8-micro for a YOLOv8/11 teacher, any scale; a darknet model, which takes the "
               "teacher's anchors, for a YOLOv3-family teacher), or train on labels without mimic (loss.distill=0 "
               "loss.label=1)")


def check_head_layouts(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> None:
    """A clear error when the student's head maps cannot mimic the teacher's (levels, anchors, grid, classes)."""
    if len(student) != len(teacher):
        raise ValueError(f"mimic: the student has {len(student)} detection levels, the teacher {len(teacher)}; "
                         f"{LAYOUT_HINT}")
    for i, (s, t) in enumerate(zip(student, teacher)):
        if s.shape != t.shape:
            raise ValueError(f"mimic: level {i}: student head map {tuple(s.shape)} vs teacher {tuple(t.shape)}; "
                             f"{LAYOUT_HINT}")


def mimic_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """L_mimic = sum over scales of mean((P_student - P_teacher)^2) on raw outputs (xy/wh logits, objectness
    and class logits; no sigmoid, no mask). The teacher's maps carry no gradient; the result is fp32."""
    check_head_layouts(student, teacher)
    return sum(torch.mean((s.float() - t.detach().float()) ** 2) for s, t in zip(student, teacher))
