"""fastdiode: fast data-free knowledge distillation of object detectors (DIODE).

The public face: ``fastdiode.losses`` (BN-statistics loss, TV prior), ``fastdiode.augment`` (differentiable
augmentation with boxes), ``fastdiode.ops`` (the fused ops with their references) and backend selection.
The Triton kernels are the subpackage ``fastdiode.kernels`` (the top-level ``kernels/`` folder, mapped by
setup.py); a source checkout runs after ``pip install --no-deps --no-build-isolation -e .``, which needs no
package index.
"""
from __future__ import annotations

from fastdiode.runtime.backend import get_backend, set_backend

__version__ = "0.1.0"
__all__ = ["__version__", "get_backend", "set_backend"]
