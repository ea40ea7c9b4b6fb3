"""Argument checks on tensors (one clear ValueError naming the argument) and the accumulation dtype policy,
shared by the ops and the losses."""
from __future__ import annotations

import torch


def require_float(t: torch.Tensor, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")


def require_rank(t: torch.Tensor, name: str, ranks: tuple[int, ...], layout: str) -> None:
    if t.dim() not in ranks:
        raise ValueError(f"{name}: expected a tensor of shape {layout}, got {t.dim()}-d shape {tuple(t.shape)}")


def require_vector(t: torch.Tensor, name: str, length: int, of: str) -> None:
    require_float(t, name)
    if t.dim() != 1 or t.numel() != length:
        raise ValueError(f"{name}: expected a vector of length {length} ({of}), got shape {tuple(t.shape)}")


def require_same_device(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def upcast(t: torch.Tensor) -> torch.Tensor:
    """t in its accumulation dtype: float32 for half types, unchanged for float32/float64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))
