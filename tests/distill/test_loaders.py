import json

import numpy as np
import pytest
import torch

from fastdiode.data.batch_plan import BatchPlan
from fastdiode.data.dali_loader import available as dali_available
from fastdiode.data.jitter import JitterRanges, colour_matrix
from fastdiode.data.loader import batches, torch_batches
from fastdiode.data.scan import scan_dataset


def test_plan_shards_the_global_batch_and_is_a_function_of_the_step():
    one = BatchPlan(10, 4, seed=3)
    ranks = [BatchPlan(10, 4, seed=3, rank=r, world=2) for r in range(2)]
    for step in range(6):
        assert ranks[0].samples(step) + ranks[1].samples(step) == one.samples(step)
    epoch0 = [i for s in range(5) for i, _ in BatchPlan(10, 2, seed=3).samples(s)]
    assert sorted(epoch0) == list(range(10))  # every item once per epoch
    multi = BatchPlan(10, 4, sizes=(64, 96, 128), scale_every=2)
    assert multi.size_at(0) == multi.size_at(1)
    assert {multi.size_at(s) for s in range(0, 40, 2)} == {64, 96, 128}
    with pytest.raises(ValueError, match="divisible"):
        BatchPlan(10, 3, world=2)


def test_flip_moves_boxes_with_the_pixels(digits):
    """A box drawn as a bright frame stays on the frame after the loader's flip and letterbox."""
    data = scan_dataset(digits["train"], 10)
    plan = BatchPlan(len(data.items), 8, seed=0, sizes=(96,))
    flip = JitterRanges(1.0, 0, 0, 0)
    plain, flipped = (next(iter(torch_batches(data, plan, aug, 8, 0, 1, workers=0)))
                      for aug in (JitterRanges.off(), flip))
    for b in range(8):
        for (c, x, y, w, _), (c2, x2, y2, w2, _) in zip(plain[1][b].tolist(), flipped[1][b].tolist()):
            if c < 0:
                continue
            assert c2 == c and y2 == pytest.approx(y) and w2 == pytest.approx(w)
            x1 = round((x - w / 2) * 96)
            x1f = round((x2 + w2 / 2) * 96) - 1  # the same column, mirrored
            torch.testing.assert_close(plain[0][b, :, :, x1], flipped[0][b, :, :, x1f])


def test_colour_matrix_is_identity_at_rest_and_keeps_grey_grey():
    np.testing.assert_allclose(colour_matrix(0, 1, 1), np.eye(3), atol=1e-6)
    grey = np.full(3, 0.4)
    np.testing.assert_allclose(colour_matrix(30, 1.5, 1.0) @ grey, grey, atol=1e-5)  # hue/saturation leave grey
    np.testing.assert_allclose(colour_matrix(0, 1, 0.5) @ grey, grey * 0.5, atol=1e-6)


@pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI is not installed")
@pytest.mark.parametrize("aug", [JitterRanges.off(), JitterRanges(0.5, 10, 0.5, 0.3)])
def test_dali_and_torch_pipelines_agree(digits, aug):
    data = scan_dataset(digits["train"], 10)
    plan = BatchPlan(len(data.items), 4, seed=1, sizes=(64, 96), scale_every=1)
    ref = list(batches("torch", data, plan, aug, 8, 0, 4, workers=0))
    got = list(batches("dali", data, plan, aug, 8, 0, 4, workers=1))
    for (xa, ba), (xb, bb) in zip(ref, got):
        assert xa.shape == xb.shape
        assert (xa - xb).abs().mean() < 0.01  # the resampling filters differ slightly
        torch.testing.assert_close(ba, bb)  # identical geometry: boxes within far less than a pixel


def test_corrupt_images_and_bad_labels_are_reported_and_skipped(tmp_path, digits, caplog):
    import shutil

    root = tmp_path / "set"
    shutil.copytree(digits["train"], root)
    names = sorted(p.stem for p in (root / "images").iterdir())
    (root / "images" / f"{names[0]}.png").write_bytes(b"not a png")
    png = (root / "images" / f"{names[1]}.png").read_bytes()
    (root / "images" / f"{names[1]}.png").write_bytes(png[: len(png) // 2])  # truncated
    (root / "labels" / f"{names[2]}.txt").write_text("3 0.5 0.5 0.2\n")  # four fields
    data = scan_dataset(root, 10)
    assert len(data.items) == len(names) - 3
    assert {p for p, _ in data.skipped} == {str(root / "images" / f"{n}.png") for n in names[:3]}
    assert "skipped 3 of" in caplog.text and names[2] in caplog.text
    with pytest.raises(ValueError, match="strict"):
        scan_dataset(root, 10, strict=True)


def test_a_class_the_model_lacks_is_an_error_even_where_bad_lines_are_skipped(tmp_path, digits, capsys):
    """Labels and model that do not belong together fail before any step, naming the file and line."""
    import shutil

    from fastdiode.cli import main
    from tests.helpers import train_args

    root = tmp_path / "set"
    shutil.copytree(digits["train"], root)
    label = sorted((root / "labels").iterdir())[1]
    label.write_text(label.read_text() + "12 0.5 0.5 0.2 0.2\n")
    lines = len(label.read_text().splitlines())
    with pytest.raises(ValueError, match=f"{label.name}:{lines}: class 12 is not below the model's 10 classes"):
        scan_dataset(root, 10)
    assert main(["train", *train_args(tmp_path / "run", root)]) == 2
    assert f"{label.name}:{lines}: class 12" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_missing_and_empty_datasets_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        scan_dataset(tmp_path / "nope")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        scan_dataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="data.loader"):
        batches("fast", None, None, None, 1, 0, 1)


def test_digits_are_deterministic_and_their_boxes_tight(tmp_path, digits):

    from fastdiode.data.digits import build_digits
    from tests.helpers import TINY_DIGITS

    again = build_digits(tmp_path / "again", TINY_DIGITS, progress=False)
    for split in ("train", "val", "photos", "noise"):
        a = sorted((digits[split] / "images").iterdir())
        b = sorted((again[split] / "images").iterdir())
        assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    coco = json.loads((digits["val"] / "annotations.json").read_text())
    assert len(coco["categories"]) == 10 and coco["annotations"]
    train_names = {p.name for p in (digits["train"] / "images").iterdir()}
    assert not train_names & {p.name for p in (digits["val"] / "images").iterdir()}


def test_digit_boxes_touch_digit_pixels_and_outside_is_background():
    from fastdiode.data.digits import DigitsSpec, _background, _scans, digit_canvas

    spec = DigitsSpec(size=64, min_digit=16, max_digit=32)
    scans = _scans(spec)["train"]
    for seed in range(20):
        image, boxes = digit_canvas(np.random.default_rng(seed), *scans, spec)
        replay = np.random.default_rng(seed)  # the same draws: dark/light, then the background
        background = _background(replay, 64, bool(replay.random() < 0.7))
        outside = np.ones((64, 64), bool)
        for _, xc, yc, w, h in boxes:
            x1, y1 = round((xc - w / 2) * 64), round((yc - h / 2) * 64)
            x2, y2 = round((xc + w / 2) * 64), round((yc + h / 2) * 64)
            outside[y1:y2, x1:x2] = False
            inside = np.abs(image[y1:y2, x1:x2] - background[y1:y2, x1:x2]).max(-1) > 0
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        assert np.abs(image - background)[outside].max() < 1e-12


@pytest.fixture
def without_dali(monkeypatch):
    """DALI hidden from the import system, as on a plain install without the dali extra: there is no ``nvidia``
    package at all, so even ``find_spec("nvidia.dali")`` raises ModuleNotFoundError."""
    import importlib.util
    import sys

    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "nvidia" or name.startswith("nvidia."):
            raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    for name in [m for m in sys.modules if m == "nvidia" or m.startswith("nvidia.")]:
        monkeypatch.delitem(sys.modules, name)


def test_auto_loader_falls_back_to_torch_without_dali(digits, without_dali):
    data = scan_dataset(digits["train"], 10)
    plan = BatchPlan(len(data.items), 4, seed=1, sizes=(64,))
    images, boxes = next(iter(batches("auto", data, plan, JitterRanges.off(), 8, 0, 1, workers=0)))
    assert images.shape == (4, 3, 64, 64) and boxes.shape == (4, 8, 5)


def test_dali_loader_without_dali_says_how_to_install_it(digits, without_dali, tmp_path, capsys):
    from fastdiode.cli import main
    from tests.helpers import train_args

    assert main(["train", *train_args(tmp_path / "run", digits["train"]), "data.loader=dali"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install nvidia-dali-cuda120" in err
