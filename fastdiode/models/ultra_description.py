"""Model descriptions of the YOLOv8 / YOLO11 family: ultralytics' layer lists (``backbone`` + ``head``, each row
``[from, repeats, module, args]``) and compound ``scales`` ``{name: [depth, width, max_channels]}``, built into
modules as ultralytics' ``parse_model`` builds them (method.md §11): repeats max(round(n * depth), 1) when n > 1,
channels make_divisible(min(c, max_channels) * width, 8), C3k2 forced to C3k blocks at scales m, l and x, and a
yolov8-style (``legacy``) class branch in Detect unless the description uses C3k2.

The same reader takes fastdiode's own descriptions (``fastdiode/models/descriptions/*.yaml``) and the ``yaml``
dict an ultralytics checkpoint carries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from fastdiode.models.ultra_blocks import C2PSA, C3, SPPF, Bottleneck, C2f, C3k2, Concat, Conv, Detect, DWConv

DESCRIPTIONS = Path(__file__).resolve().parent / "descriptions"
MODULES: dict[str, type[nn.Module]] = {"Conv": Conv, "DWConv": DWConv, "Bottleneck": Bottleneck, "C2f": C2f,
                                       "C3": C3, "C3k2": C3k2, "SPPF": SPPF, "C2PSA": C2PSA, "Concat": Concat,
                                       "nn.Upsample": nn.Upsample, "Detect": Detect}
SCALED = (Conv, DWConv, Bottleneck, C2f, C3, C3k2, SPPF, C2PSA)  # the first argument is output channels
REPEATED = (C2f, C3, C3k2, C2PSA)  # take the repeat count as their third argument


def make_divisible(x: float, divisor: int) -> int:
    return math.ceil(x / divisor) * divisor


def load_description(family: str) -> dict:
    """fastdiode's description of ``family`` (``yolov8``, ``yolo11``)."""
    path = DESCRIPTIONS / f"{family}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in DESCRIPTIONS.glob("*.yaml"))
        raise ValueError(f"model family {family!r}: no description; known: {', '.join(known)}")
    return yaml.safe_load(path.read_text())


@dataclass
class BuiltLayers:
    """The modules of a description, and how they connect."""

    layers: list[nn.Module]
    froms: list[int | list[int]]  # each layer's input: -1 (the previous one), a layer index, or a list of them
    save: list[int]  # the layers whose outputs later layers read
    channels: list[int]  # each layer's output channels
    backbone: int  # how many leading layers form the backbone


def build_layers(description: dict, scale: str | None, num_classes: int, in_channels: int = 3) -> BuiltLayers:
    """The layers of ``description`` at ``scale`` with ``num_classes`` classes; errors name the layer."""
    scales = description.get("scales") or {}
    depth, width, max_channels = 1.0, 1.0, float("inf")
    if scales:
        if scale not in scales:
            raise ValueError(f"scale {scale!r}: the description has scales {', '.join(map(str, scales))}")
        depth, width, max_channels = scales[scale]
    rows = list(description.get("backbone") or []) + list(description.get("head") or [])
    if not rows or rows[-1][2] != "Detect":
        raise ValueError("description: expected backbone and head layer lists ending in a Detect layer")
    reg_max = description.get("reg_max", 16)
    legacy = not any(row[2] == "C3k2" for row in rows)
    channels: list[int] = []
    built = BuiltLayers([], [], [], channels, len(description.get("backbone") or []))
    for i, row in enumerate(rows):
        if len(row) != 4:
            raise ValueError(f"description: layer {i}: expected [from, repeats, module, args], got {row}")
        f, n, name, args = row
        if name not in MODULES:
            raise ValueError(f"description: layer {i}: module {name!r} is not one fastdiode builds (known: "
                             f"{', '.join(MODULES)})")
        m = MODULES[name]
        args = [num_classes if a == "nc" else a for a in args]
        c_in = [channels[x] if channels else in_channels for x in ([f] if isinstance(f, int) else f)]
        n = max(round(n * depth), 1) if n > 1 else n
        if m in SCALED:
            c2 = make_divisible(min(args[0], max_channels) * width, 8)
            args = [c_in[0], c2, *args[1:]]
            if m in REPEATED:
                args.insert(2, n)
                n = 1
            if m is C3k2 and scale in ("m", "l", "x"):
                args[3:4] = [True]
        elif m is Concat:
            c2 = sum(c_in)
        elif m is Detect:
            args = [args[0], reg_max, tuple(c_in), legacy]
            c2 = c_in[0]
        else:
            c2 = c_in[0]
        try:
            module = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        except (TypeError, ValueError) as e:
            raise ValueError(f"description: layer {i} ({name} {args}): {e}") from None
        built.layers.append(module)
        built.froms.append(f)
        built.save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        channels.append(c2)
    built.save = sorted(set(built.save))
    return built
