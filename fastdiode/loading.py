"""Detectors from what a user names: a checkpoint or darknet weights file, a teacher config section, the
student of a training config. Shared by the commands, the demo, the benchmarks and the tests."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fastdiode import models
from fastdiode.config import TeacherConfig
from fastdiode.models.detector import Detector
from fastdiode.models.int8_program import SUFFIX as INT8_SUFFIX
from fastdiode.models.int8_program import load_int8
from fastdiode.models.ultra import NAME as ULTRA_NAME
from fastdiode.models.ultralytics_checkpoint import load_ultralytics

COCO_CLASSES = 80  # a darknet .weights file without a stated class count is taken as COCO's


def build_detector(model: str | None, darknet_cfg: str | None, num_classes: int = COCO_CLASSES,
                   width: float | None = None, depth: int | None = None, **kwargs) -> Detector:
    """A built-in architecture (``width``/``depth`` scale yolo-micro) or one from a darknet ``.cfg`` file."""
    if darknet_cfg:
        return models.from_cfg(darknet_cfg)
    variant = {k: v for k, v in (("width", width), ("depth", depth)) if v is not None}
    return models.build_model(model, num_classes=num_classes, **variant, **kwargs)


def load_detector(weights: str | Path, model: str | None = None, darknet_cfg: str | None = None,
                  num_classes: int | None = None, width: float | None = None, depth: int | None = None,
                  quantized_ok: bool = False) -> Detector:
    """A fastdiode checkpoint (NAME.safetensors + NAME.json), a darknet .weights file with the built-in ``model`` or
    the darknet ``.cfg`` file it belongs to, or an ultralytics detection checkpoint (``.pt``, read without
    ultralytics and without running code from the file: :mod:`fastdiode.models.ultralytics_checkpoint`). With
    ``quantized_ok`` (evaluation) also what ``fastdiode quantize`` writes: an int8 program (``.pt2``) or a
    fake-quantized checkpoint; elsewhere these are an error that says so."""
    path = Path(weights)
    if path.suffix == INT8_SUFFIX:
        if not quantized_ok:
            raise ValueError(f"{path}: an int8 program (fastdiode quantize), but an FP detector is expected here")
        net = load_int8(path)
        if num_classes is not None and net.num_classes != num_classes:
            raise ValueError(f"{path}: {net.num_classes} classes, but {num_classes} were asked for")
        return net
    if path.suffix == ".pt":
        if model or darknet_cfg:
            raise ValueError(f"--weights {path}: an ultralytics checkpoint carries its own architecture; drop "
                             "--model/--cfg")
        net = load_ultralytics(path)
        if num_classes is not None and net.num_classes != num_classes:
            raise ValueError(f"{path}: {net.num_classes} classes, but {num_classes} were asked for")
        return net
    if path.suffix == ".weights":
        if (model is None) == (darknet_cfg is None):
            raise ValueError(f"--weights {path}: a darknet .weights file needs exactly one of --model or --cfg")
        net = build_detector(model, darknet_cfg, num_classes or COCO_CLASSES, width, depth)
        return models.load_darknet_weights(net, path)
    if model or darknet_cfg:
        raise ValueError(f"--weights {path}: a fastdiode checkpoint carries its own architecture; drop --model/--cfg")
    net = models.load(path, kind=("detector", "fake-quant-detector") if quantized_ok else "detector")
    if num_classes is not None and net.num_classes != num_classes:
        raise ValueError(f"{path}: {net.num_classes} classes, but {num_classes} were asked for")
    return net


def randomized_detector(model: str | None, darknet_cfg: str | None, num_classes: int = COCO_CLASSES,
                        seed: int = 0, width: float | None = None, depth: int | None = None) -> Detector:
    """A detector with random weights and random BN statistics: for benchmarking speed only."""
    torch.manual_seed(seed)
    net = build_detector(model, darknet_cfg, num_classes, width, depth)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net


@dataclass(frozen=True)
class LoadedTeacher:
    """A teacher as a ``teacher`` config section names it: the model, its class names and where it came from."""

    model: Detector
    class_names: list[str]
    source: str  # the weights' path, or what stands in for one (random weights)


def load_teacher(teacher: TeacherConfig) -> LoadedTeacher:
    """The teacher of a ``teacher`` config section."""
    weights = teacher.weights
    if not weights:
        raise ValueError("teacher.weights: required: a darknet .weights file, a fastdiode checkpoint, or 'random' "
                         "(random weights, for benchmarking only)")
    if weights == "random":
        net = randomized_detector(teacher.model, teacher.cfg, teacher.num_classes or COCO_CLASSES,
                                  width=teacher.width, depth=teacher.depth)
        source = "random weights and BN statistics (benchmarking only; the images mean nothing)"
    else:
        darknet = Path(weights).suffix == ".weights"
        try:
            net = load_detector(weights, teacher.model if darknet and not teacher.cfg else None,
                                teacher.cfg if darknet else None, teacher.num_classes,
                                teacher.width if darknet else None, teacher.depth if darknet else None)
        except ValueError as e:
            raise ValueError(f"teacher: {e}") from None
        source = str(weights)
    names = getattr(net, "class_names", None) or [str(i) for i in range(net.num_classes)]
    return LoadedTeacher(net, names, source)


def build_student(train_config, teacher: Detector | None) -> Detector:
    """The student of a training config (its ``student`` section), initialised from ``train.seed``. A
    distillation student takes the teacher's classes and anchors unless the config sets them, so the head layouts
    match."""
    sc = train_config.student
    torch.manual_seed(train_config.train.seed)
    if sc.init:
        return models.load(sc.init)
    if sc.cfg:
        return models.from_cfg(sc.cfg)
    classes = teacher.num_classes if teacher is not None else sc.num_classes
    if ULTRA_NAME.match(sc.model):  # anchor-free: no anchors to share
        if sc.anchors or sc.width is not None or sc.depth is not None:
            raise ValueError(f"student: {sc.model} is anchor-free and scaled by its name; drop student.anchors, "
                             "student.width and student.depth")
        return models.build_model(sc.model, classes, input_size=train_config.train.img_size)
    anchors = sc.anchors
    if anchors is None and teacher is not None and hasattr(teacher, "layer_specs"):
        anchors = next(spec["anchors"] for spec in teacher.layer_specs if spec["type"] == "yolo")
    return build_detector(sc.model, None, classes, sc.width, sc.depth, anchors=anchors,
                          input_size=train_config.train.img_size)


def load_classifier(path: str | Path) -> torch.nn.Module:
    """DICOD's crop classifier from a fastdiode classifier checkpoint (a detector checkpoint is a clear error)."""
    try:
        return models.load(path, kind="classifier")
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"classifier: {e}") from None
