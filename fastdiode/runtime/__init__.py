"""Device and backend selection shared by every layer."""
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

__all__ = [
    "BACKENDS",
    "compiled",
    "get_backend",
    "interpreter_enabled",
    "resolve_backend",
    "set_backend",
    "set_compile",
    "triton_importable",
]
