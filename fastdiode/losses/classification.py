"""Classification losses of DICOD's crop teacher: cross-entropy and softmax focal loss (Lin et al. 2017)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Softmax focal loss, mean over the batch: -(1 - p_t)^γ · log p_t of each sample's true class (γ = 0 is
    cross-entropy). Logits (N, C), labels (N,) class indices."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits, labels: expected (N, C) and (N,), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    log_p = F.log_softmax(logits.float(), -1).gather(1, labels[:, None]).squeeze(1)
    return (-(1 - log_p.exp()).pow(gamma) * log_p).mean()
