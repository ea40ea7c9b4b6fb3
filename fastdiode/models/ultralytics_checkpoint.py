"""A user's ultralytics checkpoint (``yolov8s.pt``, ``best.pt``) as a fastdiode detector, without ultralytics.

An ultralytics ``.pt`` is a pickle of its Python objects: a dict whose ``model`` entry (``ema`` in a training
checkpoint) is the whole ``DetectionModel``. Unpickling it the usual way imports ultralytics and runs whatever
the file names, which is why a pickle from a stranger can run code. Here the file is read by a restricted
unpickler that resolves only

* what torch needs to rebuild tensors and parameters (its rebuild functions, storages, ``OrderedDict``, ``set``,
  ``torch.Size``, dtypes), as torch rebuilds them;
* the classes of ultralytics' and torch's module trees (``ultralytics.*``, ``torch.nn.modules.*``) and plain data
  records (numpy scalars and dtypes, paths, namespaces), each as an inert :class:`Record` that keeps what was
  pickled for it and runs none of the class's code;

and refuses every other global (``os.system``, ``builtins.eval``, any other module) with an error naming it:
no code from the file runs. From the records it takes the model description (the object's ``yaml``), the class
names and the strides, builds fastdiode's :class:`fastdiode.models.ultra.UltraYOLO`, copies each BatchNorm's eps
(it lives on the pickled objects, not in the state dict), and loads the weights (released files are fp16),
checking every tensor's name and shape. The Detect head's cached ``anchors``/``strides``/``shape`` are not
weights and are ignored.
"""
from __future__ import annotations

import _compat_pickle
import ast
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import torch

from fastdiode.models.ultra import UltraYOLO

DETECTION_MODEL = "ultralytics.nn.tasks.DetectionModel"
TASKS = {"SegmentationModel": "segment", "PoseModel": "pose", "ClassificationModel": "classify",
         "OBBModel": "obb", "WorldModel": "world", "YOLOEModel": "yoloe", "RTDETRDetectionModel": "rtdetr"}
# Rebuilt as torch rebuilds them (what torch's own weights-only loader allows for these files).
TORCH_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
                 ("torch._utils", "_rebuild_parameter_with_state"), ("collections", "OrderedDict"),
                 ("builtins", "set"), ("torch", "Size")}
# Kept as inert records: the module trees, and plain data a training run may leave in a checkpoint.
RECORD_PREFIXES = ("ultralytics.", "torch.nn.modules.")
RECORD_GLOBALS = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype"),
                  ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("types", "SimpleNamespace")}


class Record:
    """An object of the checkpoint kept as data: its class path (:attr:`path`), the arguments it was created
    with and the state pickled for it. None of the original class's code runs."""

    path: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Record:
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    def __repr__(self) -> str:
        return f"Record({self.path})"


class CheckpointError(ValueError):
    """An ultralytics checkpoint that cannot be read as a fastdiode detector."""


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals listed above; any other is an :class:`pickle.UnpicklingError` naming it."""

    records: dict[str, type[Record]] = {}

    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles name Python 2 modules (__builtin__.set): map them as pickle's own find_class does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in TORCH_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        path = f"{module}.{name}"
        if (module, name) in RECORD_GLOBALS or path.startswith(RECORD_PREFIXES):
            if path not in self.records:
                self.records[path] = type(name, (Record,), {"path": path})
            return self.records[path]
        raise pickle.UnpicklingError(f"the pickle names the global {path}, which is neither a tensor rebuild nor a "
                                     "class of ultralytics' model; refusing to load it (no code from the file was run)")


RESTRICTED_PICKLE = types.ModuleType("fastdiode_restricted_pickle")
RESTRICTED_PICKLE.Unpickler = RestrictedUnpickler
RESTRICTED_PICKLE.load = lambda file, **kw: RestrictedUnpickler(file, **kw).load()
RESTRICTED_PICKLE.__dict__.update(UnpicklingError=pickle.UnpicklingError)


def read_checkpoint(path: str | Path) -> Any:
    """The unpickled content of an ultralytics ``.pt`` (records and tensors), read by the restricted unpickler."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=RESTRICTED_PICKLE)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from None
    except (zipfile.BadZipFile, EOFError, RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: truncated or not a torch checkpoint ({type(e).__name__}: {e})") \
            from None


def module_records(record: Record, prefix: str = "") -> dict[str, Record]:
    """Every module record of a pickled module tree by its dotted path (the root as '')."""
    out = {prefix.rstrip("."): record}
    for name, child in (record.state.get("_modules") or {}).items():
        if isinstance(child, Record):
            out.update(module_records(child, f"{prefix}{name}."))
    return out


def record_state_dict(record: Record) -> dict[str, torch.Tensor]:
    """The state dict of a pickled module tree: parameters and persistent buffers, by dotted name."""
    out = {}
    for path, rec in module_records(record).items():
        prefix = f"{path}." if path else ""
        skip = rec.state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for name, tensor in (rec.state.get(group) or {}).items():
                if tensor is not None and name not in skip:
                    out[prefix + name] = tensor
    return out


def _literal(value: Any) -> Any:
    """A description argument as ultralytics' parser reads it: strings that are Python literals ('None',
    '[1, 2]') become those values (by ast.literal_eval, which evaluates literals only); others stay strings."""
    if isinstance(value, str) and value != "nc":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def detection_record(content: Any, path: Path) -> Record:
    """The DetectionModel record of a checkpoint's content (``model``, or ``ema`` in a training checkpoint)."""
    if not isinstance(content, dict):
        raise CheckpointError(f"checkpoint {path}: expected an ultralytics checkpoint (a dict with a 'model' entry), "
                              f"got {type(content).__name__}")
    model = content.get("model") or content.get("ema")
    if model is None:
        raise CheckpointError(f"checkpoint {path}: no 'model' or 'ema' entry holds a model (keys: "
                              f"{', '.join(map(str, content))})")
    if not isinstance(model, Record) or not model.path.startswith("ultralytics."):
        raise CheckpointError(f"checkpoint {path}: the 'model' entry is {type(model).__name__}, not an ultralytics "
                              "model")
    if model.path != DETECTION_MODEL:
        cls = model.path.rsplit(".", 1)[-1]
        task = TASKS.get(cls, "another task's")
        raise CheckpointError(f"checkpoint {path}: a {cls} ({task} model); fastdiode reads detection models "
                              f"({DETECTION_MODEL})")
    return model


def load_ultralytics(path: str | Path) -> UltraYOLO:
    """A fastdiode detector with the weights of an ultralytics detection checkpoint (``model.class_names`` holds
    its class names). Errors name the file and what does not fit."""
    path = Path(path)
    content = read_checkpoint(path)
    record = detection_record(content, path)
    description = record.state.get("yaml")
    if not isinstance(description, dict):
        raise CheckpointError(f"checkpoint {path}: the model carries no description (its 'yaml' attribute)")
    description = {k: v for k, v in description.items()}
    for part in ("backbone", "head"):
        description[part] = [[row[0], row[1], row[2], [_literal(a) for a in row[3]]]
                             for row in description.get(part) or []]
    names = record.state.get("names") or {}
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    num_classes = int(description.get("nc") or len(names))
    if names and len(names) != num_classes:
        raise CheckpointError(f"checkpoint {path}: {len(names)} class names for {num_classes} classes")
    sizes = [a.get("imgsz") for a in (content.get("train_args"), record.state.get("args")) if isinstance(a, dict)]
    size = next((s for s in sizes if s), 640)
    size = max(size) if isinstance(size, (list, tuple)) else size
    name = Path(str(description.get("yaml_file", path.stem))).stem
    try:
        model = UltraYOLO(description, description.get("scale"), num_classes, int(size), name)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from None
    state = record_state_dict(record)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"checkpoint {path}: its weights do not fit the model its description builds: missing "
                              f"{missing[:3]}, unexpected {unexpected[:3]}, shapes {wrong[:3]}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    modules = dict(model.named_modules())
    for module_path, rec in module_records(record).items():
        if rec.path == "torch.nn.modules.batchnorm.BatchNorm2d":
            modules[module_path].eps = float(rec.state.get("eps", modules[module_path].eps))
    model.class_names = names or [str(i) for i in range(num_classes)]
    return model.eval()
