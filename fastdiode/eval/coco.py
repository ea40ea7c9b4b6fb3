"""COCO evaluation with pycocotools: the 12 standard statistics, a per-class AP table, and TIDE's error
breakdown (``tidecv``: Cls, Loc, Both, Dupe, Bkg, Miss as dAP, plus FalsePos and FalseNeg).

:func:`coco_map` runs a detector over an image folder + COCO json and evaluates it; :func:`evaluate` scores
a list of COCO-format detections against a ground-truth file. pycocotools and tidecv are imported lazily.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fastdiode.data.dataset import DetectionDataset, collate
from fastdiode.data.images import detections_to_original
from fastdiode.data.labels import CocoLabels
from fastdiode.models.detector import Detector
from fastdiode.runtime.files import atomic_write

log = logging.getLogger("fastdiode")
TIDE_MAIN = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
TIDE_SPECIAL = ("FalsePos", "FalseNeg")
STAT_NAMES = ["mAP@[.5:.95]", "mAP@.5", "mAP@.75", "mAP small", "mAP medium", "mAP large",
              "AR@1", "AR@10", "AR@100", "AR small", "AR medium", "AR large"]


def evaluate(gt_json: str | Path, detections: list[dict]) -> dict:
    """{'stats': {name: value}, 'per_class': {class name: AP@[.5:.95]}} of COCO-format detections
    (image_id, category_id, bbox [x, y, w, h] in pixels, score) against a COCO ground-truth file."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
    names = {c["id"]: c["name"] for c in gt.loadCats(gt.getCatIds())}
    if not detections:
        return {"stats": dict.fromkeys(STAT_NAMES, 0.0), "per_class": dict.fromkeys(names.values(), 0.0),
                "detections": 0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # (T iou thresholds, R recalls, K classes, A areas, M max-dets)
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        per_class[names[cat_id]] = float(p[p > -1].mean()) if (p > -1).any() else 0.0
    return {"stats": {n: float(v) for n, v in zip(STAT_NAMES, ev.stats)}, "per_class": per_class,
            "detections": len(detections)}


def tide_errors(gt_json: str | Path, detections: str | Path | list[dict]) -> dict | None:
    """TIDE's error breakdown {'main': {Cls, Loc, Both, Dupe, Bkg, Miss}, 'special': {FalsePos, FalseNeg}} in dAP
    (AP@0.5 points) of COCO-format detections (a list, or a results json) against a COCO ground-truth file.
    tidecv's COCO loader reads a ``segmentation`` for every annotation even in box mode: box-only annotations
    get their box's polygon (the box-only workaround). None, with a warning, where tidecv is not installed."""
    try:
        from tidecv import TIDE, datasets
    except ImportError:
        log.warning("fastdiode: tidecv is not installed; no TIDE error breakdown")
        return None
    gt = json.loads(Path(gt_json).read_text())
    for ann in gt["annotations"]:
        if not ann.get("segmentation"):
            x, y, w, h = ann["bbox"]
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    with tempfile.TemporaryDirectory() as tmp:
        patched = Path(tmp) / "gt.json"
        patched.write_text(json.dumps(gt))
        if not isinstance(detections, (str, Path)):
            (Path(tmp) / "det.json").write_text(json.dumps(detections))
            detections = Path(tmp) / "det.json"
        tide = TIDE()
        with contextlib.redirect_stdout(io.StringIO()):
            tide.evaluate(datasets.COCO(str(patched)), datasets.COCOResult(str(detections)), mode=TIDE.BOX)
            errors = tide.get_all_errors()
    # {'main' | 'special': {run name: {error type: dAP}}}, with a single run here
    return {kind: {name: float(v) for group in runs.values() for name, v in group.items()}
            for kind, runs in errors.items()}


@torch.no_grad()
def detect_folder(model: Detector, dataset: DetectionDataset, category_ids: list[int], batch_size: int = 16,
                  conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
                  device: str | torch.device = "cpu", progress: bool = True) -> list[dict]:
    """COCO-format detections of ``model`` over ``dataset`` (boxes mapped back to the original images)."""
    from tqdm import tqdm

    model = model.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    out = []
    for images, _, infos in tqdm(loader, desc="detect", unit="batch", disable=not progress):
        dets = model.detect(model(images.to(device)), conf_thres, iou_thres, max_det, multi_label=True)
        for det, info in zip(dets, infos):
            for x1, y1, x2, y2, score, cls in detections_to_original(det.cpu(), info["letterbox"]).tolist():
                out.append({"image_id": info["image_id"], "category_id": category_ids[int(cls)],
                            "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                            "score": round(score, 5)})
    return out


def format_eval_report(result: dict) -> str:
    lines = ["COCO evaluation", *(f"  {name:<14} {value:.4f}" for name, value in result["stats"].items()),
             "", "Per-class AP@[.5:.95]:"]
    width = max((len(n) for n in result["per_class"]), default=5)
    lines += [f"  {name:<{width}} {ap:.4f}" for name, ap in result["per_class"].items()]
    tide = result.get("tide")
    if tide:
        main, special = tide["main"], tide["special"]
        lines += ["", "TIDE errors (dAP@0.5):", "  " + "  ".join(f"{k:>8}" for k in (*TIDE_MAIN, *TIDE_SPECIAL)),
                  "  " + "  ".join(f"{main[k]:8.2f}" for k in TIDE_MAIN) + "  " +
                  "  ".join(f"{special[k]:8.2f}" for k in TIDE_SPECIAL)]
    return "\n".join(lines)


def coco_map(model: Detector, image_dir: str | Path, annotations: str | Path, img_size: int | None = None,
             batch_size: int = 16, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
             device: str | torch.device = "cpu", out_dir: str | Path | None = None, progress: bool = True,
             tide: bool = True) -> dict:
    """Evaluate ``model`` on ``image_dir`` against the COCO json ``annotations``; with ``out_dir``, write
    detections.json, metrics.json and metrics.txt there. Returns the :func:`evaluate` dict + 'tide'
    (:func:`tide_errors`; None with ``tide=False``)."""
    coco = CocoLabels(annotations)
    if len(coco.class_names) != model.num_classes:
        raise ValueError(f"annotations {annotations}: {len(coco.class_names)} categories, but the model has "
                         f"{model.num_classes} classes")
    dataset = DetectionDataset(image_dir, annotations, size=img_size or model.input_size, capacity=10_000)
    detections = detect_folder(model, dataset, coco.category_ids, batch_size, conf_thres, iou_thres,
                               max_det, device, progress)
    result = evaluate(annotations, detections)
    result["tide"] = tide_errors(annotations, detections) if tide and detections else None
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write(out / "detections.json", lambda t: t.write_text(json.dumps(detections)))
        atomic_write(out / "metrics.json", lambda t: t.write_text(json.dumps(result, indent=1)))
        atomic_write(out / "metrics.txt", lambda t: t.write_text(format_eval_report(result) + "\n"))
    return result


__all__ = ["STAT_NAMES", "TIDE_MAIN", "TIDE_SPECIAL", "coco_map", "detect_folder", "evaluate", "format_eval_report",
           "tide_errors"]
