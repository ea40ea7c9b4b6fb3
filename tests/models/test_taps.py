import pytest
import torch

from fastdiode.models import build_model
from fastdiode.models.taps import FeatureTaps, resolve_points


@pytest.mark.parametrize("name, strides", [("yolov3", [8, 16, 32]), ("yolov3-spp", [8, 16, 32]),
                                           ("yolov3-tiny", [8, 16, 32]), ("yolo-micro", [8, 16])])
def test_named_points_of_the_darknet_models(name, strides):
    model = build_model(name, num_classes=3).eval()
    size = 64
    with torch.no_grad(), FeatureTaps(model, ["backbone", "neck"]) as taps:
        preds = model(torch.rand(1, 3, size, size))
        feats = taps.features
    backbone, neck = feats[:len(strides)], feats[len(strides):]
    assert [size // f.shape[-1] for f in backbone] == strides
    assert [f.shape[-2:] for f in neck] == [p.shape[2:4] for p in preds]  # one per head, at its grid


def test_taps_keep_the_graph_and_come_off():
    model = build_model("yolo-micro", num_classes=3, width=0.25)
    x = torch.rand(2, 3, 64, 64)
    with FeatureTaps(model, "neck") as taps:
        model(x)
        sum(f.sum() for f in taps.features).backward()
    assert any(p.grad is not None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_unknown_point_is_a_clear_error():
    model = build_model("yolo-micro", num_classes=3)
    assert resolve_points(model, ["blocks.3"]) == ["blocks.3"]
    with pytest.raises(ValueError, match="feature point .fpn.: not a named point \\(backbone, neck, convs\\)"):
        FeatureTaps(model, "fpn")


def test_taps_under_torch_compile(compile_on):
    model = build_model("yolo-micro", num_classes=3, width=0.25).eval()
    x = torch.rand(1, 3, 64, 64)
    with FeatureTaps(model, "neck") as taps:
        model(x)
        eager = [f.clone() for f in taps.features]
        torch.compile(model)(x)
        for a, b in zip(taps.features, eager):
            torch.testing.assert_close(a, b)


def test_one_entry_of_a_named_point():
    model = build_model("yolov3-tiny", num_classes=3)
    assert resolve_points(model, "backbone[0]") == [model.feature_points()["backbone"][0]]
    assert resolve_points(model, ["neck[-1]"]) == [model.feature_points()["neck"][-1]]
    with pytest.raises(ValueError, match="backbone\\[7\\]"):
        resolve_points(model, "backbone[7]")
