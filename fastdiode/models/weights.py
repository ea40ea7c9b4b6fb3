"""Darknet .weights files: a header (major, minor, revision as int32; ``seen`` as int64 from version 0.2 on,
int32 before), then for each conv layer in cfg order: BN beta, gamma, running mean, running variance (or the
conv bias without BN), then the conv weights, all float32."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastdiode.models.darknet import ConvBlock, Darknet
from fastdiode.runtime.files import atomic_write


def _tensors(block: ConvBlock) -> list[torch.Tensor]:
    """The tensors of one conv layer in file order."""
    if block.bn is not None:
        head = [block.bn.bias, block.bn.weight, block.bn.running_mean, block.bn.running_var]
    else:
        head = [block.conv.bias]
    return head + [block.conv.weight]


def _read_header(data: bytes, path: Path) -> int:
    """Byte offset of the first float."""
    if len(data) < 16:
        raise ValueError(f"darknet weights {path}: {len(data)} bytes is too short for the 16- or 20-byte header")
    major, minor, _ = np.frombuffer(data[:12], dtype=np.int32)
    return 20 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 16


def load_darknet_weights(model: Darknet, path: str | Path) -> Darknet:
    """Load an official-layout .weights file into ``model``. The whole file is checked against the model first,
    so a truncated, oversized or mismatched file raises (naming the first conv layer that does not fit, with
    expected vs found counts) and leaves the model untouched."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"darknet weights {path}: no such file")
    data = path.read_bytes()
    offset = _read_header(data, path)
    if (len(data) - offset) % 4:
        raise ValueError(f"darknet weights {path}: {len(data) - offset} bytes after the header is not a whole "
                         "number of float32 values")
    floats = np.frombuffer(data, dtype=np.float32, offset=offset)
    convs = model.conv_blocks()
    layer_index = [i for i, b in enumerate(model.blocks) if isinstance(b, ConvBlock)]
    pos = 0
    plan = []
    for n, (block, index) in enumerate(zip(convs, layer_index)):
        need = sum(t.numel() for t in _tensors(block))
        if pos + need > floats.size:
            raise ValueError(
                f"darknet weights {path} do not fit {model.name}: conv layer {index} (conv #{n + 1} of "
                f"{len(convs)}, {block.conv.in_channels}->{block.conv.out_channels} {block.conv.kernel_size[0]}x"
                f"{block.conv.kernel_size[0]}) needs {need} floats, only {floats.size - pos} remain "
                f"(file: {floats.size} floats, model: {sum(sum(t.numel() for t in _tensors(b)) for b in convs)})")
        plan.append((block, pos))
        pos += need
    if pos != floats.size:
        raise ValueError(f"darknet weights {path} do not fit {model.name}: {floats.size - pos} floats are left "
                         f"after the last conv layer {layer_index[-1]} (file: {floats.size} floats, model: {pos}); "
                         "is this the file of another cfg or class count?")
    with torch.no_grad():
        for block, start in plan:
            for t in _tensors(block):
                t.copy_(torch.from_numpy(floats[start:start + t.numel()].copy()).view_as(t))
                start += t.numel()
    return model


def save_darknet_weights(model: Darknet, path: str | Path, seen: int = 0) -> Path:
    """Write ``model`` as a darknet .weights file (version 0.2.5 header), atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.array([0, 2, 5], dtype=np.int32).tofile(f)
            np.array([seen], dtype=np.int64).tofile(f)
            for block in model.conv_blocks():
                for t in _tensors(block):
                    t.detach().float().cpu().numpy().ravel().tofile(f)

    return atomic_write(path, write)
