"""The YOLOv8/11 family: published parameter counts, the detector seam, fastdiode checkpoints, and ultralytics
checkpoints read by the restricted loader (written by the tests in ultralytics' layout: no real file needed)."""
import copy
import os
import sys
import types

import pytest
import torch
from torch import nn

from fastdiode.losses import BNStatLoss
from fastdiode.models import build_model, load, save
from fastdiode.models import ultra_blocks as blocks
from fastdiode.models.ultra import UltraYOLO
from fastdiode.models.ultra_description import load_description
from fastdiode.models.ultralytics_checkpoint import CheckpointError, load_ultralytics

PUBLISHED = {"yolov8n": 3_157_200, "yolov8s": 11_166_560, "yolov8m": 25_902_640, "yolov8l": 43_691_520,
             "yolov8x": 68_229_648, "yolo11n": 2_624_080, "yolo11s": 9_458_752, "yolo11m": 20_114_688,
             "yolo11l": 25_372_160, "yolo11x": 56_966_176}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_counts_are_the_published_ones(name):
    model = build_model(name, num_classes=80)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[name]
    assert model.strides == [8.0, 16.0, 32.0]


def test_seam_outputs_and_feature_points():
    model = build_model("yolo11-micro", num_classes=3).eval()
    maps = model(torch.rand(2, 3, 96, 96))
    assert [tuple(m.shape) for m in maps] == [(2, 64 + 3, s, s) for s in (12, 6, 3)]
    points = model.feature_points()
    assert points == {"backbone": ["model.4", "model.6", "model.10"], "neck": ["model.16", "model.19", "model.22"]}
    assert len(model.backbone_modules()) == 11
    with pytest.raises(ValueError, match="anchor-free detector takes no anchors"):
        build_model("yolov8n", anchors=[1, 2])


def test_fastdiode_checkpoint_round_trip(tmp_path):
    model = build_model("yolov8-micro", num_classes=4)
    path = save(model.eval(), tmp_path / "v8", ["a", "b", "c", "d"])
    back = load(path).eval()
    x = torch.rand(1, 3, 64, 64)
    assert back.name == "yolov8-micro" and back.class_names[2] == "c"
    assert all(torch.equal(a, b) for a, b in zip(model(x), back(x)))


def test_bn_statistics_fuse_with_silu_and_match_the_unfused_loss():
    model = build_model("yolov8-micro", num_classes=3).eval().requires_grad_(False)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    values, tapped = [], []
    for fuse in (True, False):
        with BNStatLoss(model, fuse=fuse, backend="torch") as bn:
            model(x)
            values.append(bn())
            tapped.append(len(bn._tapped))
    assert tapped == [sum(isinstance(m, blocks.Conv) for m in model.modules()), 0]  # every Conv-BN-act block fused
    torch.testing.assert_close(values[0], values[1], rtol=1e-4, atol=1e-5)


# ---- ultralytics checkpoints ----------------------------------------------------------------------------------
ULTRA_PATHS = {"ultralytics.nn.modules.conv": ("Conv", "DWConv", "Concat"),
               "ultralytics.nn.modules.block": ("Bottleneck", "C2f", "C3k", "C3k2", "SPPF", "C2PSA", "PSABlock",
                                                "Attention", "DFL"),
               "ultralytics.nn.modules.head": ("Detect",)}


@pytest.fixture
def ultralytics_layout(monkeypatch):
    """Stand-in ``ultralytics`` modules whose classes carry ultralytics' paths and fastdiode's code (the same
    attribute names and state-dict keys); :func:`as_ultralytics` turns a fastdiode model into such a tree. They
    are removed before loading, so the loader cannot import them."""
    made = {}
    for name in ("ultralytics", "ultralytics.nn", "ultralytics.nn.modules", "ultralytics.nn.tasks", *ULTRA_PATHS):
        made[name] = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, made[name])
    for module, names in ULTRA_PATHS.items():
        for name in names:
            setattr(made[module], name, type(name, (getattr(blocks, name),), {"__module__": module}))
    for name in ("DetectionModel", "SegmentationModel"):
        setattr(made["ultralytics.nn.tasks"], name, type(name, (nn.Module,), {"__module__": "ultralytics.nn.tasks"}))

    def as_ultralytics(model: UltraYOLO, task: str = "DetectionModel") -> nn.Module:
        tree = getattr(made["ultralytics.nn.tasks"], task)()
        tree.model = copy.deepcopy(model.model)
        for m in tree.model.modules():
            for module, names in ULTRA_PATHS.items():
                if type(m).__name__ in names and type(m).__module__.startswith("fastdiode"):
                    m.__class__ = getattr(made[module], type(m).__name__)
        tree.yaml = {**copy.deepcopy(model.description), "scale": model.scale, "yaml_file": f"{model.name}.yaml"}
        tree.names = {i: f"class{i}" for i in range(model.num_classes)}
        tree.stride = torch.tensor(model.strides)
        head = tree.model[-1]
        # cached by ultralytics' last forward, not weights
        head.anchors, head.strides, head.shape = torch.zeros(2, 10), torch.zeros(1, 10), (1, 2, 3)
        return tree

    yield as_ultralytics
    for name in made:
        sys.modules.pop(name, None)


def write(path, tree, **extra):
    torch.save({"date": "2026-12-03", "version": "8.4.0", "model": tree.half(), "ema": None, **extra}, path)
    return path


@pytest.mark.parametrize("name", ["yolov8-micro", "yolo11-micro"])
def test_ultralytics_checkpoint_round_trip(tmp_path, ultralytics_layout, monkeypatch, name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=5).eval()
    tree = ultralytics_layout(model)
    tree.model[0].bn.eps = 1e-5  # eps lives on the pickled object: it must be carried over
    path = write(tmp_path / "best.pt", tree, train_args={"imgsz": 96})
    for module in list(sys.modules):
        if module.startswith("ultralytics"):
            monkeypatch.delitem(sys.modules, module)
    loaded = load_ultralytics(path)
    assert loaded.name == name and loaded.class_names == [f"class{i}" for i in range(5)] and loaded.input_size == 96
    assert loaded.model[0].bn.eps == 1e-5 and loaded.model[1].bn.eps == 1e-3
    reference = copy.deepcopy(model).half().float()
    reference.model[0].bn.eps = 1e-5
    x = torch.rand(2, 3, 64, 64)
    for a, b in zip(loaded(x), reference(x)):
        torch.testing.assert_close(a, b)


def test_training_checkpoint_keeps_the_model_under_ema(tmp_path, ultralytics_layout):
    tree = ultralytics_layout(build_model("yolov8-micro", num_classes=2))
    torch.save({"model": None, "ema": tree, "optimizer": {"state": {}}, "epoch": 3}, tmp_path / "last.pt")
    assert load_ultralytics(tmp_path / "last.pt").num_classes == 2


def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"names the global (posix|os)\.system.*no code from the file was run"):
        load_ultralytics(tmp_path / "evil.pt")
    assert not marker.exists()

    class Eval:
        def __reduce__(self):
            return eval, ("__import__('pathlib').Path('" + str(marker) + "').touch()",)

    torch.save({"model": Eval()}, tmp_path / "eval.pt")
    with pytest.raises(CheckpointError, match=r"builtins\.eval"):
        load_ultralytics(tmp_path / "eval.pt")
    assert not marker.exists()


def test_bad_checkpoints_are_one_clear_error(tmp_path, ultralytics_layout):
    model = build_model("yolov8-micro", num_classes=2)
    seg = write(tmp_path / "seg.pt", ultralytics_layout(model, "SegmentationModel"))
    with pytest.raises(CheckpointError, match="a SegmentationModel \\(segment model\\); fastdiode reads detection"):
        load_ultralytics(seg)
    good = write(tmp_path / "good.pt", ultralytics_layout(model))
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: truncated or not a torch checkpoint"):
        load_ultralytics(tmp_path / "cut.pt")
    tree = ultralytics_layout(model)
    tree.yaml["head"][-2][2] = "C2fAttn"
    with pytest.raises(CheckpointError, match="layer 21: module 'C2fAttn' is not one fastdiode builds"):
        load_ultralytics(write(tmp_path / "attn.pt", tree))
    tree = ultralytics_layout(model)
    tree.yaml["nc"] = 3  # a description that does not fit the weights
    tree.names = {0: "a", 1: "b", 2: "c"}
    with pytest.raises(CheckpointError, match="do not fit the model its description builds"):
        load_ultralytics(write(tmp_path / "nc.pt", tree))
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="no 'model' or 'ema' entry"):
        load_ultralytics(tmp_path / "plain.pt")


def test_description_errors_name_the_layer():
    description = load_description("yolov8")
    with pytest.raises(ValueError, match="scale 'q'"):
        UltraYOLO(description, "q", 3)
    broken = copy.deepcopy(description)
    broken["backbone"][3][2] = "Focus"
    with pytest.raises(ValueError, match="layer 3: module 'Focus'"):
        UltraYOLO(broken, "n", 3)
