import json

import pytest
import torch

from fastdiode.data import (
    CocoLabels,
    boxes_to_canvas,
    coco_dict,
    detections_to_original,
    letterbox,
    read_image,
    read_yolo_labels,
    write_coco_json,
    write_png,
    write_yolo_labels,
)
from fastdiode.data.dataset import DetectionDataset, collate

BOXES = torch.tensor([[0.0, 0.5, 0.5, 0.2, 0.4], [3.0, 0.25, 0.75, 0.1, 0.1], [-1.0, 0, 0, 0, 0]])


def test_yolo_labels_round_trip(tmp_path):
    write_yolo_labels(tmp_path / "a.txt", BOXES)
    torch.testing.assert_close(read_yolo_labels(tmp_path / "a.txt"), BOXES[:2])
    assert read_yolo_labels(tmp_path / "missing.txt").shape == (0, 5)


@pytest.mark.parametrize("line, match", [
    ("0 0.5 0.5 0.2", "a.txt:2: expected 'class xc yc w h'"),
    ("1.5 0.5 0.5 0.2 0.2", "a.txt:2: expected"),
    ("0 1.5 0.5 0.2 0.2", "a.txt:2: box .* outside"),
    ("9 0.5 0.5 0.2 0.2", "a.txt:2: class 9 is not below the model's 5 classes"),
])
def test_yolo_label_errors_name_file_and_line(tmp_path, line, match):
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n" + line + "\n")
    with pytest.raises(ValueError, match=match):
        read_yolo_labels(tmp_path / "a.txt", num_classes=5)


def test_coco_round_trip(tmp_path):
    write_coco_json(tmp_path / "ann.json", [("a.png", 200, 100, BOXES), ("b.png", 50, 60, BOXES[:1])], list("abcd"))
    coco = CocoLabels(tmp_path / "ann.json")
    assert coco.class_names == list("abcd") and coco.category_ids == [1, 2, 3, 4]
    torch.testing.assert_close(coco.boxes(1), BOXES[:2])
    torch.testing.assert_close(coco.boxes(2), BOXES[:1])


def test_coco_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        CocoLabels(tmp_path / "none.json")
    data = coco_dict([("a.png", 20, 20, BOXES[:1])], ["x"])
    data["annotations"][0]["bbox"] = [15, 15, 10, 10]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="bad.json: annotation 1 box .* outside image 1"):
        CocoLabels(tmp_path / "bad.json")


def test_letterbox_maps_boxes_both_ways():
    image = torch.rand(3, 60, 100)
    canvas, lb = letterbox(image, 64)
    assert canvas.shape == (3, 64, 64) and lb.scale == 0.64 and lb.pad_x == 0 and lb.pad_y == 13
    on_canvas = boxes_to_canvas(BOXES[:2], lb, 64)
    xyxy = torch.cat([on_canvas[:, 1:3] - on_canvas[:, 3:5] / 2, on_canvas[:, 1:3] + on_canvas[:, 3:5] / 2], 1) * 64
    back = detections_to_original(torch.cat([xyxy, torch.ones(2, 2)], 1), lb)
    expect = BOXES[:2, 1:] * torch.tensor([100, 60, 100, 60])
    expect = torch.cat([expect[:, :2] - expect[:, 2:] / 2, expect[:, :2] + expect[:, 2:] / 2], 1)
    torch.testing.assert_close(back[:, :4], expect, atol=1e-4, rtol=0)


def test_png_round_trip_rounds(tmp_path):
    image = torch.full((3, 4, 5), 0.5 / 255 + 1e-4)  # 0.5004 of a level: rounds up to 1, truncation would give 0
    write_png(tmp_path / "x.png", image)
    assert read_image(tmp_path / "x.png").mul(255).round().unique().tolist() == [1.0]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        read_image(tmp_path / "broken.png")


def test_dataset_pads_to_capacity(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a", "b"):
        write_png(tmp_path / "images" / f"{name}.png", torch.rand(3, 30, 40))
    (tmp_path / "labels").mkdir()
    write_yolo_labels(tmp_path / "labels" / "a.txt", BOXES)
    ds = DetectionDataset(tmp_path / "images", size=32, capacity=4)
    images, boxes, infos = collate([ds[0], ds[1]])
    assert images.shape == (2, 3, 32, 32) and boxes.shape == (2, 4, 5)
    assert (boxes[0, :, 0] >= 0).sum() == 2 and (boxes[1, :, 0] >= 0).sum() == 0
    with pytest.raises(ValueError, match="exceed the capacity of 1"):
        DetectionDataset(tmp_path / "images", size=32, capacity=1)[0]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        DetectionDataset(tmp_path / "nothing")
