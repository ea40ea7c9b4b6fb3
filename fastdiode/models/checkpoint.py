"""fastdiode's own checkpoints: ``NAME.safetensors`` (the state dict) beside ``NAME.json`` (its kind, classes,
class names, input size, the model's ``checkpoint_spec()`` — for a Darknet its name, layer list and anchors —
and any extra metadata), so a model loads without code. Three kinds: detectors, fake-quantized detectors
(``fastdiode quantize mode=qat``: the JSON adds their :class:`fastdiode.models.fake_quant.QuantSpec`) and
classifiers (a model says which by its ``checkpoint_kind``; Darknets are detectors), and loading one where
another is expected is an error that says so. Other architectures register a builder with
:func:`register_architecture`."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fastdiode.models.darknet import Darknet
from fastdiode.models.detector import Detector
from fastdiode.models.fake_quant import QuantSpec, fake_quantize
from fastdiode.models.resnet import ResNet
from fastdiode.models.ultra import UltraYOLO
from fastdiode.runtime.files import atomic_write

# architecture name -> builder(spec, input_size) of an unloaded model
ARCHITECTURES: dict[str, Callable[[dict, int], torch.nn.Module]] = {
    "darknet": Darknet.from_checkpoint_spec, "resnet": ResNet.from_checkpoint_spec,
    "ultralytics-yolo": UltraYOLO.from_checkpoint_spec}
KINDS = {"detector": "an FP detector", "fake-quant-detector": "a fake-quantized detector (fastdiode quantize "
         "mode=qat)", "classifier": "a classifier"}


def register_architecture(name: str, builder: Callable[[dict, int], torch.nn.Module]) -> None:
    """Make checkpoints whose spec says ``architecture: name`` loadable: ``builder(spec, input_size)``."""
    ARCHITECTURES[name] = builder


def _stem(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def checkpoint_info(model: Detector, class_names: list[str] | None = None, **metadata) -> dict:
    """The JSON half of ``model``'s checkpoint: its kind, classes, class names, input size and spec."""
    if class_names is not None and len(class_names) != model.num_classes:
        raise ValueError(f"class_names: {len(class_names)} names for a model with {model.num_classes} classes")
    info = {
        "format": f"fastdiode-{getattr(model, 'checkpoint_kind', 'detector')}/1", "num_classes": model.num_classes,
        "class_names": class_names or [str(i) for i in range(model.num_classes)],
        "input_size": model.input_size, **model.checkpoint_spec(), "metadata": metadata,
    }
    if getattr(model, "fake_quant", None) is not None:
        info["fake_quant"] = model.fake_quant.to_dict()
    return info


def save(model: Detector, path: str | Path, class_names: list[str] | None = None, **metadata) -> Path:
    """Save ``model`` as PATH.safetensors + PATH.json (each written atomically); returns the .safetensors path."""
    stem = _stem(path)
    info = checkpoint_info(model, class_names, **metadata)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    weights = stem.with_suffix(".safetensors")
    atomic_write(weights, lambda tmp: save_file(state, str(tmp)))
    atomic_write(stem.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(info, indent=1)))
    return weights


def load_info(path: str | Path, kind: str | tuple[str, ...] = "detector") -> dict:
    """The JSON half of a checkpoint of ``kind`` (one of :data:`KINDS`, or a tuple of those accepted)."""
    meta = _stem(path).with_suffix(".json")
    if not meta.is_file():
        raise FileNotFoundError(f"checkpoint {meta}: no such file (a fastdiode checkpoint is NAME.safetensors "
                                "+ NAME.json)")
    try:
        info = json.loads(meta.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint {meta}: truncated or not a JSON file ({e})") from None
    found = info.get("format")
    kinds = (kind,) if isinstance(kind, str) else kind
    if found not in [f"fastdiode-{k}/1" for k in kinds]:
        wanted = " or ".join(KINDS[k] for k in kinds)
        other = next((k for k in KINDS if found == f"fastdiode-{k}/1"), None)
        if other is not None:
            raise ValueError(f"checkpoint {meta}: {KINDS[other]}, but {wanted} is expected here")
        raise ValueError(f"checkpoint {meta}: not a fastdiode checkpoint of {wanted} (format {found!r})")
    return info


def load(path: str | Path, map_location: str | torch.device = "cpu",
         kind: str | tuple[str, ...] = "detector") -> Detector:
    """Rebuild and load a model saved with :func:`save` (a ``kind`` checkpoint, or one of a tuple of kinds;
    :data:`KINDS`); ``model.class_names`` holds the class names."""
    info = load_info(path, kind)
    weights = _stem(path).with_suffix(".safetensors")
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {weights}: no such file")
    kind = info.get("architecture", "darknet")  # checkpoints from before the seam are Darknets
    if kind not in ARCHITECTURES:
        raise ValueError(f"checkpoint {_stem(path).with_suffix('.json')}: architecture {kind!r} is not registered "
                         f"(known: {', '.join(ARCHITECTURES)}); register it with "
                         "fastdiode.models.checkpoint.register_architecture")
    model = ARCHITECTURES[kind](info, info["input_size"])
    if "fake_quant" in info:
        fake_quantize(model, QuantSpec(**info["fake_quant"]))
    try:
        state = load_file(str(weights), device=str(map_location))
    except SafetensorError as e:
        raise ValueError(f"checkpoint {weights}: truncated or not a safetensors file ({e})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {weights} does not match its JSON's layers: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    model.class_names = info["class_names"]
    return model.to(map_location)
