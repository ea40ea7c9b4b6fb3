"""Run settings shared by both engines, resolved for a device: which device, which autocast dtype, whether
to compile. The engines read the ``run`` config section through these, so both resolve it the same way."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; an explicit CUDA device that is absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"run.device: {name!r} is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device: {name}: CUDA was requested but no CUDA device is available")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``run.precision``: bf16 for ``bf16``, and for ``auto`` on CUDA; None (fp32)
    otherwise."""
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cuda") else None


def compile_enabled(flag: bool | None, device: torch.device) -> bool:
    """``run.compile``: None compiles on CUDA only (on CPU the compiled detectors are slower than eager,
    benchmarks/results/models_cpu.md)."""
    return device.type == "cuda" if flag is None else bool(flag)


def precision_name(dtype: torch.dtype | None) -> str:
    return "bf16 autocast" if dtype is not None else "fp32"
