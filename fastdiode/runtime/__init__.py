"""Device, run settings, distributed setup and backend selection shared by every layer."""
from fastdiode.runtime.backend import (
    BACKENDS,
    compiled,
    get_backend,
    interpreter_enabled,
    resolve_backend,
    set_backend,
    set_compile,
    triton_importable,
)
from fastdiode.runtime.device import autocast_dtype, compile_enabled, resolve_device
from fastdiode.runtime.distributed import RunContext, RunRecord, run_context

__all__ = [
    "BACKENDS",
    "RunContext",
    "RunRecord",
    "autocast_dtype",
    "compile_enabled",
    "compiled",
    "get_backend",
    "interpreter_enabled",
    "resolve_backend",
    "resolve_device",
    "run_context",
    "set_backend",
    "set_compile",
    "triton_importable",
]
