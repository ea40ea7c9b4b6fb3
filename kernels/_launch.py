"""Helpers shared by the launchers."""
from __future__ import annotations

import torch
import triton

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_float(x: torch.Tensor, name: str) -> None:
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32, float16 or bfloat16, got {x.dtype}")


def next_pow2_capped(n: int, cap: int) -> int:
    """The next power of two at least n (a block size covering n), but no more than ``cap``."""
    return min(triton.next_power_of_2(max(int(n), 1)), cap)
