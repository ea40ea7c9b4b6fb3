"""Device and backend selection shared by every layer."""
from fastdiode.runtime.backend import (
    BACKENDS,
    get_backend,
    interpreter_enabled,
    resolve_backend,
    set_backend,
    triton_importable,
)

__all__ = [
    "BACKENDS",
    "get_backend",
    "interpreter_enabled",
    "resolve_backend",
    "set_backend",
    "triton_importable",
]
