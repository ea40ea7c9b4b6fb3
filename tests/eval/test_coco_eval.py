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


def test_tide_breakdown_when_installed(tmp_path, gt_json):
    pytest.importorskip("tidecv")
    from fastdiode.eval import tide_errors

    dets = gt_detections(gt_json)
    dets[1]["category_id"] = 1  # the dog of image 1 labelled cat: a classification error
    (tmp_path / "det.json").write_text(json.dumps(dets))
    errors = tide_errors(gt_json, tmp_path / "det.json")
    assert errors["main"]["Cls"] > 0 and errors["main"]["Loc"] == 0
