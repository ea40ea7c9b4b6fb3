from pathlib import Path

import pytest
import torch
from torch import nn

from fastdiode.models import build_model, from_cfg, load, load_darknet_weights, parse_cfg, save, save_darknet_weights
from fastdiode.models.cfg import normalize_layer
from fastdiode.models.zoo import yolov3_layers, yolov3_tiny_layers

CFG_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "darknet"


def darknet_cfg(name: str) -> Path:
    """A standard darknet cfg: the layer-for-layer guarantee needs them beside the checkout, so a missing one
    fails the test instead of skipping it."""
    path = CFG_DIR / f"{name}.cfg"
    assert path.is_file(), f"the darknet reference cfg is missing: expected {path} (../shared/data/darknet)"
    return path


def counts(model):
    return sum(p.numel() for p in model.parameters()), sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name, params, bns", [
    ("yolov3", 61_949_149, 72), ("yolov3-spp", 62_998_749, 73), ("yolov3-tiny", 8_852_366, 11)])
def test_parameter_and_bn_counts(name, params, bns):
    assert counts(build_model(name)) == (params, bns)


@pytest.mark.parametrize("name, layers", [
    ("yolov3", yolov3_layers()), ("yolov3-spp", yolov3_layers(spp=True)), ("yolov3-tiny", yolov3_tiny_layers())])
def test_builtin_definition_is_the_cfg(name, layers):
    _, cfg_layers = parse_cfg(darknet_cfg(name))
    assert [normalize_layer(x) for x in layers] == [normalize_layer(x) for x in cfg_layers]


@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov3-spp"])
def test_cfg_model_equals_builtin_model(name):
    builtin = build_model(name).eval()
    cfg_model = from_cfg(darknet_cfg(name)).eval()
    cfg_model.load_state_dict(builtin.state_dict())
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(builtin(x), cfg_model(x)):
        assert a.shape == b.shape and torch.equal(a, b)


def test_outputs_in_train_and_eval_mode():
    model = build_model("yolo-micro", num_classes=10)
    for mode in (True, False):
        outs = model.train(mode)(torch.rand(2, 3, 96, 96))
        assert [tuple(o.shape) for o in outs] == [(2, 3, 6, 6, 15), (2, 3, 12, 12, 15)]
    assert [h.stride for h in model.heads] == [16, 8]


def test_channels_last_gives_the_same_output():
    model = build_model("yolo-micro", num_classes=3, width=0.125).eval()
    x = torch.rand(2, 3, 64, 64)
    ref = model(x)
    fast = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    for a, b in zip(ref, fast):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_darknet_weights_round_trip(tmp_path):
    model = randomize_bn(build_model("yolov3-tiny", num_classes=5))
    path = save_darknet_weights(model, tmp_path / "tiny.weights")
    loaded = load_darknet_weights(build_model("yolov3-tiny", num_classes=5).eval(), path)
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(model(x), loaded(x)):
        assert torch.equal(a, b)


def test_truncated_or_mismatched_weights_name_the_layer(tmp_path):
    model = build_model("yolov3-tiny", num_classes=5)
    path = save_darknet_weights(model, tmp_path / "tiny.weights")
    truncated = tmp_path / "truncated.weights"
    truncated.write_bytes(path.read_bytes()[:-400])
    fresh = build_model("yolov3-tiny", num_classes=5)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match=r"conv layer 22 \(conv #13 of 13.*needs \d+ floats, only \d+ remain"):
        load_darknet_weights(fresh, truncated)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())  # untouched
    with pytest.raises(ValueError, match="floats are left after the last conv layer"):
        load_darknet_weights(build_model("yolov3-tiny", num_classes=2), path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_darknet_weights(model, tmp_path / "missing.weights")


def test_checkpoint_round_trip(tmp_path):
    model = randomize_bn(build_model("yolo-micro", num_classes=3, anchors=[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]))
    save(model, tmp_path / "micro", class_names=["a", "b", "c"], trained_on="unit test")
    loaded = load(tmp_path / "micro.safetensors").eval()
    assert loaded.class_names == ["a", "b", "c"] and loaded.name == "yolo-micro"
    x = torch.rand(1, 3, 48, 48)
    for a, b in zip(model(x), loaded(x)):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="class_names: 2 names"):
        save(model, tmp_path / "bad", class_names=["a", "b"])


def test_cfg_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=64\n[convolutional]\nfilters=8\nsize=3\n[dropout]\nprobability=.5\n")
    with pytest.raises(ValueError, match=r"bad.cfg:6: unsupported layer \[dropout\]"):
        parse_cfg(bad)
    bad.write_text("[net]\nwidth 64\n")
    with pytest.raises(ValueError, match="bad.cfg:2: expected"):
        parse_cfg(bad)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="yolov5.*not built in"):
        build_model("yolov5")


@pytest.mark.parametrize("size,stride", [(2, 2), (2, 1), (3, 2), (4, 2), (3, 1), (2, 3)])
def test_maxpool_skips_only_padding_no_window_reaches(size, stride):
    """The darknet padding is applied only when a window reaches it; the output is the padded pooling's."""
    from fastdiode.models.darknet import MaxPool

    pool = MaxPool(size, stride)
    for n in range(3, 10):
        x = torch.randn(1, 2, n, n + 1)
        padded = nn.functional.pad(x, pool.pad, value=float("-inf")) if pool.pad else x
        assert torch.equal(pool(x), pool.pool(padded)), (size, stride, n)


def test_truncated_checkpoint_is_one_clear_error(tmp_path, capsys):
    from fastdiode.cli import main

    path = save(build_model("yolo-micro", num_classes=3, width=0.25), tmp_path / "micro", ["a", "b", "c"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"checkpoint {path}: truncated or not a safetensors file"):
        load(path)
    assert main(["eval", "--weights", str(path), "--images", str(tmp_path), "--annotations", "x.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"checkpoint {path}: truncated" in err
    assert main(["invert", f"teacher={path}", f"job.out={tmp_path / 'inv'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "teacher: checkpoint" in err and "truncated" in err
    (tmp_path / "micro.json").write_text("{")
    with pytest.raises(ValueError, match="micro.json: truncated or not a JSON file"):
        load(path)
