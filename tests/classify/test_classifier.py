import json
import math

import pytest
import torch
import torch.nn.functional as F

from fastdiode.classify import ClassifierConfig, run_classifier_training
from fastdiode.cli import main
from fastdiode.config import ConfigError, load_config
from fastdiode.data.crops import CropSet, crop_boxes, write_crops
from fastdiode.data.images import decode_rgb
from fastdiode.data.scan import scan_dataset
from fastdiode.losses import focal_loss
from fastdiode.models import load, save
from fastdiode.models.boxes import xywh_to_xyxy
from fastdiode.models.resnet import ResNet
from fastdiode.ops.roi_crop import roi_crop_reference
from fastdiode.runtime import RunContext


@pytest.fixture(scope="module")
def crops(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("crops")
    write_crops(digits["train"].parent, out, 16, progress=False)
    return out


def test_every_box_becomes_one_crop_of_its_class(digits, crops):
    summary = json.loads((crops / "crops.json").read_text())
    assert set(summary["splits"]) == {"train", "val"}  # the source's own splits; photos/ and noise/ have no labels
    for split in ("train", "val"):
        data = scan_dataset(digits[split])
        boxes = torch.cat([i.boxes for i in data.items])
        loaded = CropSet.load(crops / split)
        assert summary["splits"][split] == len(boxes) == len(loaded.labels)
        assert loaded.labels.tolist() == boxes[:, 0].long().tolist()
        assert loaded.images.shape[1:] == (3, 16, 16) and loaded.class_names == [str(i) for i in range(10)]


def test_a_crop_is_a_pure_function_of_image_and_box(digits):
    item = scan_dataset(digits["train"]).items[0]
    image = decode_rgb(item.path)
    a, b = crop_boxes(image, item.boxes[:, 1:5], 16), crop_boxes(image, item.boxes[:1, 1:5], 16)
    assert torch.equal(a[:1], b)  # the other boxes of the image do not matter
    expected = roi_crop_reference(image[None].double() / 255, xywh_to_xyxy(item.boxes[:1, 1:5])[None].double(), 16)
    assert (a[0].double() - expected[0, 0] * 255).abs().max() <= 0.5 + 1e-6
    wide = crop_boxes(image, item.boxes[:1, 1:5], 16, context=0.5)
    assert not torch.equal(wide, b)


def test_crops_resume_and_refuse_another_size(digits, crops):
    first = json.loads((crops / "crops.json").read_text())
    assert write_crops(digits["train"].parent, crops, 16, progress=False) == first
    with pytest.raises(ValueError, match="holds crops of size 16"):
        write_crops(digits["train"].parent, crops, 32, progress=False)


@pytest.mark.parametrize("size", [0, -4])
def test_crop_size_must_be_positive(digits, tmp_path, size, capsys):
    assert main(["data", "crops", "--from", str(digits["train"].parent), "--out", str(tmp_path / "c"),
                 "--size", str(size)]) == 2
    assert "--size: expected a positive crop size" in capsys.readouterr().err


def test_resnet_scales_and_round_trips_as_a_classifier(tmp_path):
    small, big = ResNet(10, width=8, depths=(1, 1)), ResNet(10, width=16, depths=(2, 2, 2))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(big) > 10 * count(small)
    assert small(torch.rand(3, 3, 24, 20)).shape == (3, 10)  # any input size, non-square too
    path = save(small.eval(), tmp_path / "clf", [f"c{i}" for i in range(10)])
    back = load(path, kind="classifier").eval()
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(back(x), small(x))
    assert back.class_names[3] == "c3" and back.stem is not None
    with pytest.raises(ValueError, match="a classifier, but an FP detector is expected"):
        load(path)


def test_focal_loss():
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(focal_loss(logits, labels, 0.0), F.cross_entropy(logits, labels))
    p = torch.softmax(logits, 1)[torch.arange(6), labels]
    torch.testing.assert_close(focal_loss(logits, labels, 2.0), (-(1 - p) ** 2 * p.log()).mean())


def args(crops, out, *extra):
    return [f"data.train={crops / 'train'}", f"data.val={crops / 'val'}", "model.width=4", "model.depths=[1]",
            "train.batch_size=8", "train.steps=6", "train.log_every=1", "train.checkpoint_every=3",
            "train.eval_every=3", f"train.out={out}", *extra]


def test_train_classifier_resumes_exactly(crops, tmp_path):
    def run(out, **kw):
        cfg = load_config(ClassifierConfig, None, args(crops, out))
        return run_classifier_training(cfg, RunContext(torch.device("cpu")), progress=False, **kw)

    full = run(tmp_path / "full")
    run(tmp_path / "cut", stop_at=3)
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:  # written after the checkpoint, then killed
        f.write(json.dumps({"step": 4, "loss": 9.0}) + "\n")
    cut = run(tmp_path / "cut", resume=True)
    assert cut["final_eval"] == full["final_eval"] and cut["steps"] == 6 and cut["best_metric"] == "top1"
    def lines(out):  # the logged values, without the wall-clock throughput
        return [{k: v for k, v in json.loads(line).items() if k != "images_per_s"}
                for line in (out / "metrics.jsonl").read_text().splitlines()]

    assert lines(tmp_path / "cut") == lines(tmp_path / "full")
    a, b = load(tmp_path / "full" / "last", kind="classifier"), load(tmp_path / "cut" / "last", kind="classifier")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name)
    for name in ("best.safetensors", "last.json", "summary.json", "curves.png", "state.pt", "config.json"):
        assert (tmp_path / "full" / name).is_file(), name


def test_train_classifier_cli_and_its_errors(crops, tmp_path, capsys):
    assert main(["train-classifier", *args(crops, tmp_path / "run", "train.steps=2")]) == 0
    assert "top-1" in capsys.readouterr().out
    assert main(["train-classifier", *args(crops, tmp_path / "run", "train.steps=2")]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train-classifier", "model.width=4"]) == 2
    assert "data.train: required" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="loss: ce and focal"):
        load_config(ClassifierConfig, None, args(crops, tmp_path / "x", "loss.ce=0", "loss.focal=0"))


def test_classifier_honours_run_precision_and_has_no_backend(crops, tmp_path):
    """run.precision reaches the ResNet's forward (bf16 autocast on CPU too); run.backend, which nothing of the
    classifier reads, is not a key of its config."""
    def losses(out, *extra):
        cfg = load_config(ClassifierConfig, None, args(crops, out, "train.steps=2", *extra))
        run_classifier_training(cfg, RunContext(torch.device("cpu")), progress=False)
        return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
                if '"loss"' in line]

    fp32, bf16 = losses(tmp_path / "fp32"), losses(tmp_path / "bf16", "run.precision=bf16")
    assert all(math.isfinite(v) for v in bf16) and fp32 != bf16
    with pytest.raises(ConfigError, match="unknown config key run.backend"):
        load_config(ClassifierConfig, None, args(crops, tmp_path / "x", "run.backend=torch"))
