"""Data-free quantization of detectors (``fastdiode quantize``): post-training int8 through torchao's PT2E flow
and quantization-aware distillation on synthesized images (method.md §12)."""
from fastdiode.quantize.config import QuantizeConfig
from fastdiode.quantize.run import run_quantize

__all__ = ["QuantizeConfig", "run_quantize"]
