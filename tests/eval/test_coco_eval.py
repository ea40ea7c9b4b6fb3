import json

import pytest
import torch

from fastdiode.cli import main
from fastdiode.data import coco_dict, write_png
from fastdiode.eval import STAT_NAMES, evaluate
from fastdiode.models import build_model, save

GT = [("a.png", 100, 80, torch.tensor([[0.0, 0.3, 0.4, 0.2, 0.3], [1.0, 0.7, 0.6, 0.3, 0.4]])),
      ("b.png", 120, 90, torch.tensor([[1.0, 0.5, 0.5, 0.4, 0.4]]))]


@pytest.fixture
def gt_json(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco_dict(GT, ["cat", "dog"])))
    return path


def gt_detections(gt_json):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in json.loads(gt_json.read_text())["annotations"]]


def test_perfect_detections_score_one(gt_json):
    result = evaluate(gt_json, gt_detections(gt_json))
    assert result["stats"]["mAP@[.5:.95]"] == pytest.approx(1.0)
    assert result["stats"]["mAP@.5"] == pytest.approx(1.0)
    assert result["per_class"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}


def test_no_detections_score_zero(gt_json):
    assert set(evaluate(gt_json, [])["stats"].values()) == {0.0}


def test_known_case_matches_faster_coco_eval(gt_json):
    from faster_coco_eval import COCO, COCOeval_faster

    dets = gt_detections(gt_json)
    dets[0]["bbox"] = [dets[0]["bbox"][0] + 3, dets[0]["bbox"][1] + 2, dets[0]["bbox"][2], dets[0]["bbox"][3] - 4]
    dets[1]["score"] = 0.4
    dets.append({"image_id": 1, "category_id": 2, "bbox": [5, 5, 20, 20], "score": 0.9})  # false positive
    dets.append({"image_id": 2, "category_id": 1, "bbox": [40, 30, 50, 40], "score": 0.3})  # wrong class
    ours = evaluate(gt_json, dets)["stats"]
    gt = COCO(str(gt_json))
    ev = COCOeval_faster(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    for name, value in zip(STAT_NAMES, ev.stats):
        assert ours[name] == pytest.approx(float(value), abs=1e-6), name
    assert 0 < ours["mAP@[.5:.95]"] < 1


def test_eval_cli_end_to_end(tmp_path, gt_json, capsys):
    (tmp_path / "images").mkdir()
    for name, w, h, _ in GT:
        write_png(tmp_path / "images" / name, torch.rand(3, h, w))
    save(build_model("yolo-micro", num_classes=2, width=0.125), tmp_path / "micro", class_names=["cat", "dog"])
    code = main(["eval", "--weights", str(tmp_path / "micro.safetensors"), "--images", str(tmp_path / "images"),
                 "--annotations", str(gt_json), "--img-size", "64", "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(metrics["stats"]) == STAT_NAMES and set(metrics["per_class"]) == {"cat", "dog"}
    assert (tmp_path / "out" / "detections.json").is_file() and "Per-class AP" in capsys.readouterr().out


def test_eval_cli_errors(tmp_path, gt_json, capsys):
    assert main(["eval", "--weights", str(tmp_path / "none.safetensors"), "--images", str(tmp_path),
                 "--annotations", str(gt_json)]) == 2
    assert "none.json: no such file" in capsys.readouterr().err
    assert main(["eval", "--weights", "x.weights", "--images", str(tmp_path), "--annotations", str(gt_json)]) == 2
    assert "needs exactly one of --model or --cfg" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["eval", "--weights", "x.weights", "--model", "yolov3-tiny", "--images", str(tmp_path),
                     "--annotations", str(gt_json), "--device", "cuda:0"]) == 2
        assert "CUDA was requested but no CUDA device" in capsys.readouterr().err


def _with(dets, index, **change):
    dets = [dict(d) for d in dets]
    dets[index].update(change)
    return dets


def _shift(bbox, dx):
    return [bbox[0] + dx, bbox[1], bbox[2], bbox[3]]


@pytest.mark.parametrize("case, expect", [
    ("cls", "Cls"), ("loc", "Loc"), ("both", "Both"), ("dupe", "Dupe"), ("bkg", "Bkg"), ("miss", "Miss")])
def test_tide_names_each_hand_built_error(tmp_path, gt_json, case, expect):
    """One error of each kind on box-only ground truth (no segmentation: the box-only workaround): TIDE charges
    it, and (for the single-error cases) nothing else."""
    from fastdiode.eval import TIDE_MAIN, tide_errors

    dets = gt_detections(gt_json)
    dog_b = dets[2]["bbox"]  # image 2's dog: 48 x 36 px
    if case == "cls":
        dets = _with(dets, 2, category_id=0)
    elif case == "loc":  # right class, IoU in (0.1, 0.5)
        dets = _with(dets, 2, bbox=_shift(dog_b, 0.45 * dog_b[2]))
    elif case == "both":
        dets = _with(dets, 2, category_id=0, bbox=_shift(dog_b, 0.45 * dog_b[2]))
    elif case == "dupe":  # a second detection of an already detected box, ranked above two true positives
        dets = [dict(d, score=0.5) for d in dets[:2]] + [dets[2], dict(dets[2], score=0.9, bbox=_shift(dog_b, 2.0))]
    elif case == "bkg":  # a detection on empty background, ranked above two true positives
        dets = [dict(d, score=0.5) for d in dets[:2]] + [
            dets[2], {"image_id": 2, "category_id": 1, "bbox": [1.0, 1.0, 8.0, 8.0], "score": 0.9}]
    else:
        dets = dets[:2]
    errors = tide_errors(gt_json, dets)
    assert errors["main"][expect] > 0, errors
    assert all(errors["main"][k] == 0 for k in TIDE_MAIN if k != expect and case != "both"), errors


def test_tide_is_in_every_coco_map(tmp_path, gt_json):
    """coco_map (and so fastdiode eval and the trainer's final evaluation) reports TIDE next to the COCO stats."""
    from fastdiode.eval import format_eval_report

    result = {"stats": dict.fromkeys(STAT_NAMES, 0.5), "per_class": {"cat": 0.5},
              "tide": {"main": dict.fromkeys(["Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"], 1.0),
                       "special": {"FalsePos": 2.0, "FalseNeg": 3.0}}}
    text = format_eval_report(result)
    assert "TIDE errors" in text and "FalseNeg" in text and "3.00" in text


def test_tide_chart(tmp_path):
    from fastdiode.eval.tide_chart import mean_tide, plot_tide

    a = {"main": dict.fromkeys(["Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"], 1.0),
         "special": {"FalsePos": 2.0, "FalseNeg": 4.0}}
    b = {"main": dict.fromkeys(["Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"], 3.0),
         "special": {"FalsePos": 0.0, "FalseNeg": 0.0}}
    mean = mean_tide([a, None, b])
    assert mean["main"]["Cls"] == 2.0 and mean["special"]["FalseNeg"] == 2.0 and mean_tide([None]) is None
    assert plot_tide({"a": a, "b": b}, tmp_path / "tide.png").stat().st_size > 1000
