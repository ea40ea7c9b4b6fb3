"""Dataclass configs: YAML files plus ``key.sub=value`` overrides, validated with errors that name the key.

:func:`load_config` reads a YAML file into a dataclass tree, applies command-line overrides (values parsed
as YAML: ``stages.lr=[0.1,0.01]``, ``targets.capacity=8``), rejects unknown keys (listing the valid ones)
and wrongly typed values, then runs the config's own ``validate()``. :func:`config_hash` identifies a config.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from fastdiode.runtime.backend import BACKENDS

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the config's schema."""


PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TeacherConfig:
    """The frozen detector an engine learns from: the section ``teacher`` of both the inversion and the
    training configs. ``teacher=PATH`` is short for ``teacher.weights=PATH`` (the other keys stay)."""

    SHORTHAND: ClassVar[str] = "weights"
    weights: str = ""  # a fastdiode checkpoint, a darknet .weights file, or "random" (benchmarking only)
    model: str = "yolov3-spp"  # the built-in architecture of a darknet .weights file or of "random"
    cfg: str | None = None  # a darknet .cfg instead of a built-in model
    num_classes: int | None = None  # None: the checkpoint's (80 for darknet weights); set: it must match
    width: float | None = None  # yolo-micro only
    depth: int | None = None  # yolo-micro only


@dataclass
class ModelRunConfig:
    """Where and how a model runs: the section ``run`` of the crop-classifier trainer, and the base of
    :class:`RunConfig`."""

    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:1, ...
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp32
    compile: bool | None = None  # torch.compile the models: None = on CUDA only (slower than eager on CPU)

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"run.precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")


@dataclass
class RunConfig(ModelRunConfig):
    """Where and how an engine runs: the section ``run`` of the inversion and the detector trainer's configs,
    which also choose the fused ops' backend."""

    backend: str = "auto"  # the fused ops: auto, triton, torch, reference (fastdiode.runtime.backend)

    def validate(self) -> None:
        super().validate()
        if self.backend not in BACKENDS:
            raise ConfigError(f"run.backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not a {' or '.join(_type_name(o) for o in options)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if dataclasses.is_dataclass(tp):
        shorthand = getattr(tp, "SHORTHAND", None)
        if shorthand is not None and isinstance(value, str):
            return from_dict(tp, {shorthand: value}, key)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {_type_name(tp)} fields, got {value!r}")
        return from_dict(tp, value, key)
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _renamed(cls, data: dict, prefix: str) -> dict:
    """``data`` with the keys ``cls.RENAMED`` maps (old -> new) renamed, each with a deprecation warning."""
    data = dict(data)
    for old, new in getattr(cls, "RENAMED", {}).items():
        if old in data:
            where = f"{prefix}." if prefix else ""
            if new in data:
                raise ConfigError(f"{where}{old}: renamed {where}{new}, which is also set; keep only {where}{new}")
            warnings.warn(f"config key {where}{old} is deprecated: it is read as {where}{new}; rename it (the old "
                          "key will stop working in a later release)", FutureWarning, stacklevel=2)
            data[new] = data.pop(old)
    return data


def _checked_keys(cls, data: dict, prefix: str) -> dict:
    """``data`` with renamed keys read under their new names; an unknown key is an error listing the valid ones."""
    names = [f.name for f in dataclasses.fields(cls)]
    data = _renamed(cls, data, prefix)
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]}; valid keys{' of ' + prefix if prefix else ''}: "
                          f"{', '.join(names)}")
    return data


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict: its defaults with the keys of ``data`` set
    (:func:`merge_into`); a class with required fields (a list entry such as a benchmark row) from ``data``
    alone. A class may map old key names to new ones in a ``RENAMED`` class variable: the old key is accepted
    with a deprecation warning."""
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if not required:
        return merge_into(cls(), data, prefix)
    hints = typing.get_type_hints(cls)
    data = _checked_keys(cls, data, prefix)
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"{prefix or _type_name(cls)}: required key {missing[0]} is missing")
    return cls(**{k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()})


def merge_into(base: T, data: dict, prefix: str = "") -> T:
    """``base`` (a dataclass instance) with the keys of ``data`` set; a section given in part keeps the other
    values of ``base``'s section (a config's own section defaults included)."""
    hints = typing.get_type_hints(type(base))
    data = _checked_keys(type(base), data, prefix)
    kwargs = {}
    for k, v in data.items():
        key, current = f"{prefix}.{k}" if prefix else k, getattr(base, k)
        shorthand = getattr(current, "SHORTHAND", None)
        if dataclasses.is_dataclass(current) and shorthand is not None and isinstance(v, str):
            v = {shorthand: v}
        kwargs[k] = merge_into(current, v, key) if dataclasses.is_dataclass(current) and isinstance(v, dict) \
            else _coerce(v, hints[k], key)
    return dataclasses.replace(base, **kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _field_type(cls, parts: list[str]):
    """The type of the dotted field ``parts`` of dataclass ``cls`` (None where the path leaves the schema)."""
    tp = cls
    for part in parts:
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            return None
        tp = typing.get_type_hints(tp).get(part)
    return tp


def apply_override(data: dict, assignment: str, cls: type | None = None) -> None:
    """Apply one ``key.sub=value`` override to a nested dict (the value is parsed as YAML). With the config's
    dataclass ``cls``, a scalar given for a section that has a shorthand key (``teacher=PATH``) sets that key
    and keeps the section's other keys."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected key=value (e.g. stages.iterations=[10,10])")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {assignment!r}: {part} is not a section")
    value = yaml.safe_load(raw)
    shorthand = getattr(_field_type(cls, parts), "SHORTHAND", None) if cls is not None else None
    if shorthand is not None and not isinstance(value, dict):
        section = node.get(parts[-1])
        node[parts[-1]] = {**(section if isinstance(section, dict) else {}), shorthand: value}
    else:
        node[parts[-1]] = value


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple = ()) -> T:
    """Read ``path`` (YAML; None: the defaults), apply ``overrides``, build and validate a ``cls``."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config {path}: no such file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config {path}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path}: expected a mapping at the top level")
    for assignment in overrides:
        apply_override(data, assignment, cls)
    try:
        cfg = from_dict(cls, data)
        if hasattr(cfg, "validate"):
            cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"config {path}: {e}" if path is not None else str(e)) from None
    return cfg


def config_hash(cfg, ignore: tuple[str, ...] = ()) -> str:
    """A short stable hash of a config's content, without the dotted keys in ``ignore`` (e.g. ``job.out``)."""
    data = to_dict(cfg)
    for key in ignore:
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node.pop(leaf)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
