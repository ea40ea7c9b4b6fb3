import torch

from fastdiode.eval.agreement import agreement

TARGETS = torch.tensor([[[0.0, 0.5, 0.5, 0.5, 0.5], [1.0, 0.2, 0.2, 0.2, 0.2]],
                        [[1.0, 0.6, 0.6, 0.4, 0.4], [-1.0, 0, 0, 0, 0]]])


def as_detections(targets, size=100, score=0.9):
    dets = []
    for rows in targets:
        rows = rows[rows[:, 0] >= 0]
        xy, wh = rows[:, 1:3] * size, rows[:, 3:5] * size
        dets.append(torch.cat([xy - wh / 2, xy + wh / 2, torch.full((len(rows), 1), score), rows[:, :1]], 1))
    return dets


def test_perfect_agreement():
    assert agreement(as_detections(TARGETS), TARGETS, 100) == {"precision": 1.0, "recall": 1.0, "ap50": 1.0}


def test_missed_wrong_and_low_confidence():
    dets = as_detections(TARGETS)
    dets[0] = dets[0][:1]  # the class-1 box of image 0 is missed
    dets[1][0, 5] = 0.0  # image 1's box gets the wrong class
    result = agreement(dets, TARGETS, 100)
    assert result["recall"] == 1 / 3 and result["precision"] == 0.5
    assert result["ap50"] == 0.5  # class 0 perfect, class 1 found nothing
    low = agreement(as_detections(TARGETS, score=0.1), TARGETS, 100)
    assert low["precision"] == 0.0 and low["recall"] == 0.0 and low["ap50"] == 1.0
