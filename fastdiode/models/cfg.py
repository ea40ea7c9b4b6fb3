"""Darknet .cfg files: ``[section]`` headers followed by ``key=value`` lines (``#`` and ``;`` comments).

:func:`parse_cfg` returns the ``[net]`` options and the layer list as dicts with a ``type`` key and typed
values (ints, floats, lists of numbers), the same representation the built-in model definitions produce.
"""
from __future__ import annotations

from pathlib import Path

LAYER_TYPES = ("convolutional", "shortcut", "route", "upsample", "maxpool", "yolo")
# Darknet's implicit values for the keys fastdiode reads.
DEFAULTS = {
    "convolutional": {"batch_normalize": 0, "stride": 1, "pad": 0, "activation": "logistic"},
    "shortcut": {"activation": "linear"},
    "upsample": {"stride": 2},
    "maxpool": {"stride": 1},
}
MODEL_KEYS = ("type", "batch_normalize", "filters", "size", "stride", "pad", "activation", "from", "layers",
              "mask", "anchors", "classes")


def normalize_layer(layer: dict) -> dict:
    """The keys that define the network, with darknet's defaults filled in (other keys are dropped)."""
    full = {**DEFAULTS.get(layer["type"], {}), **layer}
    return {k: full[k] for k in MODEL_KEYS if k in full}


def _value(text: str):
    parts = [p.strip() for p in text.split(",") if p.strip()]
    nums = []
    for p in parts:
        try:
            nums.append(int(p))
        except ValueError:
            try:
                nums.append(float(p))
            except ValueError:
                return text.strip()
    if "," in text:
        return nums
    return nums[0] if nums else text.strip()


def parse_cfg(source: str | Path) -> tuple[dict, list[dict]]:
    """(net options, layers) of a darknet cfg given as a path or as the cfg text itself."""
    name = "<cfg text>"
    if isinstance(source, Path) or "\n" not in str(source):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"darknet cfg {path}: no such file")
        name, source = str(path), path.read_text()
    sections: list[dict] = []
    for lineno, raw in enumerate(str(source).splitlines(), 1):
        line = raw.split("#")[0].split(";")[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"{name}:{lineno}: malformed section header {raw.strip()!r}")
            sections.append({"type": line[1:-1].strip().lower(), "_line": lineno})
        elif "=" in line and sections:
            key, val = line.split("=", 1)
            sections[-1][key.strip()] = _value(val)
        else:
            raise ValueError(f"{name}:{lineno}: expected '[section]' or 'key=value', got {raw.strip()!r}")
    if not sections or sections[0]["type"] not in ("net", "network"):
        raise ValueError(f"{name}: a darknet cfg starts with a [net] section")
    for s in sections[1:]:
        if s["type"] not in LAYER_TYPES:
            raise ValueError(f"{name}:{s['_line']}: unsupported layer [{s['type']}]; "
                             f"supported: {', '.join(LAYER_TYPES)}")
    net, layers = sections[0], sections[1:]
    for s in sections:
        s.pop("_line")
    return net, layers
