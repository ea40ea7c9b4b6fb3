"""The distillation losses of task-specific zero-shot QAT (DFQ-Dojo, ICCV'25; method.md §12), where an FP detector
teaches its own fake-quantized copy: a KL divergence on the head maps and an MSE on every conv output. Both read
maps of identical layouts (the same architecture on both sides)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _same_shapes(what: str, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> None:
    if len(student) != len(teacher) or any(s.shape != t.shape for s, t in zip(student, teacher)):
        raise ValueError(f"{what}: the student's maps {[tuple(s.shape) for s in student]} and the teacher's "
                         f"{[tuple(t.shape) for t in teacher]} differ; these losses pair a model with its own "
                         "quantized copy")


def head_kl_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], temperature: float = 4.0) -> torch.Tensor:
    """Σ over head levels of τ²·KL(softmax(t/τ) ‖ softmax(s/τ)), each image's level map flattened into one
    distribution, averaged over the images (DFQ-Dojo's ``KLDivergence`` on ``out.reshape(B, -1)``, batchmean)."""
    _same_shapes("head_kl", student, teacher)
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher):
        log_s = F.log_softmax(s.float().flatten(1) / temperature, dim=1)
        p_t = F.softmax(t.float().flatten(1) / temperature, dim=1)
        total = total + temperature ** 2 * F.kl_div(log_s, p_t, reduction="batchmean")
    return total


def layer_mse_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """The mean over layers of each layer's mean squared difference (DFQ-Dojo's ``MSE``)."""
    _same_shapes("layer_mse", student, teacher)
    return torch.stack([F.mse_loss(s.float(), t.float()) for s, t in zip(student, teacher)]).mean()
