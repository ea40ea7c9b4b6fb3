"""Which implementation a fused op runs.

* ``triton``    — the Triton kernels (CUDA; on CPU only under ``TRITON_INTERPRET=1``, for tests).
* ``torch``     — the same fused decomposition as the kernels, written in torch: compiled by inductor where
  that pays (the CPU fast path; inductor's C++ backend), eager torch where it does not.
* ``reference`` — the eager torch reference: the specification in code, autograd for the gradient.
* ``auto``      — ``triton`` for CUDA float32/16/bf16 tensors when Triton imports, ``torch`` otherwise.

The process-wide default comes from ``FASTDIODE_BACKEND`` (or :func:`set_backend`); every op also takes a
``backend=`` argument. The choice is logged once per (op, device type, backend).
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
from collections.abc import Callable

import torch

BACKENDS = ("auto", "triton", "torch", "reference")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_log = logging.getLogger("fastdiode")
_logged: set[tuple[str, str, str]] = set()
_default = os.environ.get("FASTDIODE_BACKEND", "auto")
# Facts of the installation, read once (finding the spec does not import triton).
_TRITON_FOUND = importlib.util.find_spec("triton") is not None
_CXX_FOUND = any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)
_compile_enabled = os.environ.get("FASTDIODE_COMPILE", "1") != "0"


def _check_name(name: str, argument: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{argument}={name!r} is not a backend; expected one of {', '.join(BACKENDS)}")
    return name


def set_backend(name: str) -> None:
    """Set the process-wide default backend (``auto``, ``triton``, ``torch`` or ``reference``)."""
    global _default
    _default = _check_name(name, "backend")


def get_backend() -> str:
    """The process-wide default backend."""
    return _check_name(_default, "FASTDIODE_BACKEND")


def interpreter_enabled() -> bool:
    """True when Triton kernels run through the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_importable() -> bool:
    return _TRITON_FOUND


def _triton_usable(device: torch.device) -> bool:
    if not _TRITON_FOUND:
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreter_enabled())


def resolve_backend(op: str, backend: str | None, tensor: torch.Tensor) -> str:
    """Return the concrete backend (``triton``, ``torch`` or ``reference``) for running ``op`` on ``tensor``."""
    requested = get_backend() if backend is None else _check_name(backend, "backend")
    device = tensor.device
    if requested == "auto":
        usable = device.type == "cuda" and tensor.dtype in KERNEL_DTYPES and _triton_usable(device)
        choice = "triton" if usable else "torch"
    elif requested == "triton" and not _triton_usable(device):
        raise RuntimeError(
            f"{op}: backend='triton' needs a CUDA tensor (got {device.type}) with triton installed, "
            "or TRITON_INTERPRET=1 set before the first `import triton` for CPU tensors"
        )
    elif requested == "triton" and tensor.dtype not in KERNEL_DTYPES:
        raise ValueError(f"{op}: backend='triton' supports float32, float16 and bfloat16, got {tensor.dtype}")
    else:
        choice = requested
    if choice == "torch" and torch.compiler.is_compiling():
        choice = "reference"  # inside an outer torch.compile region, which fuses the reference itself
    key = (op, device.type, choice)
    if key not in _logged and not torch.compiler.is_compiling():  # logging inside a trace breaks the graph
        _logged.add(key)
        _log.info("fastdiode: %s on %s uses the %s backend", op, device.type, choice)
    return choice


def set_compile(enabled: bool) -> None:
    """Turn inductor compilation of the torch halves on or off (``FASTDIODE_COMPILE=0`` at start-up turns it
    off): off saves the first-call compile time on short runs, at the cost of speed."""
    global _compile_enabled
    _compile_enabled = bool(enabled)


def compiled(fn: Callable, dynamic: bool | None = True) -> Callable:
    """``fn`` compiled by inductor on first call while compilation is on and a C++ compiler exists for
    inductor's CPU backend; ``fn`` itself otherwise. Used for the torch halves of the fused ops.
    ``dynamic=False`` compiles once per shape: faster code, for ops that see few shapes (images); ``None`` is
    torch's automatic choice (static first, dynamic once a second shape comes)."""
    fast = torch.compile(fn, dynamic=dynamic)

    @functools.wraps(fn)
    def call(*args):
        return (fast if _compile_enabled and _CXX_FOUND else fn)(*args)

    return call
