"""torch.export and torchao's PT2E int8 flow: ``torch.export`` (batch dynamic) -> ``prepare_pt2e`` with
``X86InductorQuantizer`` (per-channel symmetric int8 weights, per-tensor uint8 activations; it folds BN into the
convs) -> calibration -> ``convert_pt2e`` -> ``torch.export`` again, which :mod:`fastdiode.models.int8_program`
saves. The program maps images to the raw head maps; decode and NMS stay outside it, in float."""
from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

MAX_BATCH = 1024


def _batch_dim() -> dict:
    return {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model(images)`` with a dynamic batch. A model it cannot trace is an error naming the
    module whose forward failed."""
    stack: list[str] = []

    def enter(name: str):
        return lambda module, args: stack.append(name)  # returns None: the input stays

    def leave(module, args, output) -> None:
        stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles += [module.register_forward_pre_hook(enter(name)), module.register_forward_hook(leave)]
    try:
        return torch.export.export(model, (example,), dynamic_shapes=(_batch_dim(),), strict=False)
    except Exception as e:  # torch.export raises many kinds; the message names the module
        where = stack[-1] if stack else ""
        module = type(model.get_submodule(where)).__name__ if where else type(model).__name__
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"torch.export cannot trace {type(model).__name__}: it fails in module "
                         f"{where or '(the model itself)'!r} ({module}): {first}") from None
    finally:
        for h in handles:
            h.remove()


def _x86_quantizer():
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    except ImportError:
        raise ValueError("fastdiode quantize needs torchao (pip install torchao): its PT2E flow makes the int8 "
                         "program") from None
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    return quantizer


@torch.no_grad()
def int8_program(model: nn.Module, batches: list[torch.Tensor], progress: bool = True) -> torch.export.ExportedProgram:
    """The int8 program of ``model`` (an FP detector, eval mode) calibrated on ``batches``. Both exports trace
    two images of the first batch: a saved program keeps its example inputs, so a whole calibration batch would
    grow the file with it (and one image would specialise the batch dimension)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = _x86_quantizer()
    model = model.eval()
    example = batches[0][:2]
    program = export_program(model, example)
    prepared = prepare_pt2e(program.module(), quantizer)
    for batch in tqdm(batches, desc="calibrate", unit="batch", disable=not progress):
        prepared(batch)
    converted = convert_pt2e(prepared)
    return torch.export.export(converted, (example,), dynamic_shapes=(_batch_dim(),), strict=False)
