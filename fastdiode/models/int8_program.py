"""An int8 detector as ``fastdiode quantize`` writes it: one ``torch.export`` archive (``NAME.pt2``) holding the
quantized program (the detector's forward pass from images to raw head maps, int8 convs through torchao's PT2E
flow) and, as an extra file, the detector's JSON description (classes, input size, architecture spec, quantization
provenance). It reloads without the config and without fastdiode's model code for the convolutions; the box decode
and NMS stay in float, run by a weight-less FP skeleton of the architecture rebuilt from the description.

Why ``torch.export`` and not ONNX QDQ: the archive is what torch.compile lowers to oneDNN int8 kernels on CPU
(inductor with freezing), it needs no exporter outside torch, and it keeps the program's graph bit-exact across a
save and a load; an ONNX file can be produced from it later without fastdiode.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from torch import nn

from fastdiode.models.checkpoint import ARCHITECTURES
from fastdiode.runtime.backend import compiled
from fastdiode.runtime.files import atomic_write

FORMAT = "fastdiode-int8-detector/1"
META = "fastdiode.json"
SUFFIX = ".pt2"


def save_int8(program: torch.export.ExportedProgram, path: str | Path, info: dict) -> Path:
    """Write ``program`` with ``info`` (the detector's checkpoint JSON) as PATH.pt2, atomically."""
    path = Path(path).with_suffix(SUFFIX)
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={META: json.dumps({**info, "format": FORMAT}, indent=1)})
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    return path


def _import_quantized_ops() -> None:
    """The quantize/dequantize ops an int8 program calls are registered by torchao's PT2E module."""
    try:
        import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
    except ImportError:
        raise ValueError("an int8 program needs torchao (pip install torchao): its quantize/dequantize ops are "
                         "registered there") from None


class Int8Detector(nn.Module):
    """The detector seam over an int8 program: ``model(images)`` runs the program (compiled by inductor with
    freezing when compilation is on), ``detect`` decodes in float with the skeleton. It evaluates; it does not
    train."""

    checkpoint_kind = "int8-detector"

    def __init__(self, program: nn.Module, skeleton: nn.Module, info: dict):
        super().__init__()
        self.program, self.skeleton, self.info = program, skeleton, info
        self.num_classes, self.input_size = info["num_classes"], info["input_size"]
        self.class_names = info["class_names"]
        self.name = f"{getattr(skeleton, 'name', 'detector')}-int8"
        self._run = compiled(program, dynamic=False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if tuple(images.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"the int8 program was exported at {self.input_size} px; got images of "
                             f"{tuple(images.shape[-2:])} (evaluate with --img-size {self.input_size})")
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):
            return list(self._run(images.float().contiguous()))

    def train(self, mode: bool = True) -> Int8Detector:
        return self  # an exported program has no train mode

    def task_loss(self, preds: list[torch.Tensor], targets: torch.Tensor):
        raise ValueError("an int8 program evaluates; it does not train (quantize-aware training: fastdiode quantize "
                         "mode=qat on the FP detector)")

    def detect(self, preds: list[torch.Tensor], conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
               multi_label: bool = False, min_wh: float = 0.0) -> list[torch.Tensor]:
        return self.skeleton.detect(preds, conf_thres, iou_thres, max_det, multi_label, min_wh)

    def feature_points(self) -> dict[str, list[str]]:
        return {}

    def checkpoint_spec(self) -> dict:
        raise ValueError("an int8 program is saved by fastdiode quantize, as a .pt2 archive")


def load_int8(path: str | Path) -> Int8Detector:
    """The int8 detector in PATH.pt2 (an error naming the file when it is not a fastdiode int8 program)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"int8 program {path}: no such file")
    _import_quantized_ops()
    extra = {META: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as e:  # torch raises several kinds for a damaged archive
        raise ValueError(f"int8 program {path}: not a readable torch.export archive ({type(e).__name__}: "
                         f"{e})") from None
    try:
        info = json.loads(extra[META])
    except json.JSONDecodeError:
        info = {}
    if info.get("format") != FORMAT:
        raise ValueError(f"int8 program {path}: a torch.export archive without fastdiode's description ({META}); "
                         "write it with fastdiode quantize")
    skeleton = ARCHITECTURES[info.get("architecture", "darknet")](info, info["input_size"]).eval()
    return Int8Detector(program.module(), skeleton, info)
