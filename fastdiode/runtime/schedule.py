"""Seeds and learning-rate schedules shared by the inversion and distillation engines."""
from __future__ import annotations

import hashlib
import math


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (job seed, batch id, stage, step, ...), stable across runs and platforms."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def lr_at(step: int, total: int, lr: float, lr_min: float, warmup: float) -> float:
    """Linear warmup over ``warmup * total`` steps, then cosine decay from ``lr`` to ``lr_min``."""
    warm = int(round(warmup * total))
    if step < warm:
        return lr * (step + 1) / warm
    progress = (step - warm) / max(total - warm, 1)
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * progress))
