"""Which implementation a fused op runs: Triton kernels, compiled torch, or the eager torch reference.

* ``triton``   — the Triton kernels (CUDA; on CPU only under ``TRITON_INTERPRET=1``, for tests).
* ``compiled`` — the torch reference compiled by inductor (the CPU fast path; C++ backend).
* ``torch``    — the eager torch reference, the specification in code.
* ``auto``     — ``triton`` for CUDA float32/16/bf16 tensors when Triton imports, otherwise ``compiled`` when a C++
  compiler is present, otherwise ``torch``.

The process-wide default comes from ``FASTDIODE_BACKEND`` (or :func:`set_backend`); every op also takes a
``backend=`` argument. The choice is logged once per (op, device type, backend).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil

import torch

BACKENDS = ("auto", "triton", "compiled", "torch")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_log = logging.getLogger("fastdiode")
_logged: set[tuple[str, str, str]] = set()
_default = os.environ.get("FASTDIODE_BACKEND", "auto")


def _check_name(name: str, argument: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{argument}={name!r} is not a backend; expected one of {', '.join(BACKENDS)}")
    return name


def set_backend(name: str) -> None:
    """Set the process-wide default backend (``auto``, ``triton``, ``compiled`` or ``torch``)."""
    global _default
    _default = _check_name(name, "backend")


def get_backend() -> str:
    """The process-wide default backend."""
    return _check_name(_default, "FASTDIODE_BACKEND")


def interpreter_enabled() -> bool:
    """True when Triton kernels run through the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# Facts of the installation, read once (finding the spec does not import triton).
_TRITON_FOUND = importlib.util.find_spec("triton") is not None
_CXX_FOUND = any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)


def triton_importable() -> bool:
    return _TRITON_FOUND


def _triton_usable(device: torch.device) -> bool:
    if not triton_importable():
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreter_enabled())


def resolve_backend(op: str, backend: str | None, tensor: torch.Tensor) -> str:
    """Return the concrete backend (``triton``, ``compiled`` or ``torch``) for running ``op`` on ``tensor``."""
    requested = get_backend() if backend is None else _check_name(backend, "backend")
    device = tensor.device
    if requested == "auto":
        if device.type == "cuda" and tensor.dtype in KERNEL_DTYPES and _triton_usable(device):
            choice = "triton"
        elif device.type == "cpu" and _CXX_FOUND:
            choice = "compiled"
        else:
            choice = "torch"
    elif requested == "triton" and not _triton_usable(device):
        raise RuntimeError(
            f"{op}: backend='triton' needs a CUDA tensor (got {device.type}) with triton installed, "
            "or TRITON_INTERPRET=1 set before the first `import triton` for CPU tensors"
        )
    elif requested == "triton" and tensor.dtype not in KERNEL_DTYPES:
        raise ValueError(f"{op}: backend='triton' supports float32, float16 and bfloat16, got {tensor.dtype}")
    else:
        choice = requested
    if choice == "compiled" and torch.compiler.is_compiling():
        choice = "torch"  # already inside an outer torch.compile region: it fuses the reference itself
    key = (op, device.type, choice)
    if key not in _logged:
        _logged.add(key)
        _log.info("fastdiode: %s on %s uses the %s backend", op, device.type, choice)
    return choice
