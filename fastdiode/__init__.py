"""fastdiode: fast data-free knowledge distillation of object detectors (DIODE).

The public face: ``fastdiode.losses`` (BN-statistics loss, TV prior), ``fastdiode.augment`` (differentiable
augmentation with boxes), ``fastdiode.ops`` (the fused ops with their references) and backend selection.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


def _map_source_kernels() -> None:
    """In a source checkout run with PYTHONPATH=., expose the top-level kernels/ folder as fastdiode.kernels,
    exactly as setup.py installs it. Does nothing for an installed package."""
    name = __name__ + ".kernels"
    if name in sys.modules or importlib.util.find_spec(name) is not None:
        return
    init = Path(__file__).resolve().parent.parent / "kernels" / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


_map_source_kernels()

from fastdiode.runtime.backend import get_backend, set_backend  # noqa: E402

__all__ = ["__version__", "get_backend", "set_backend"]
