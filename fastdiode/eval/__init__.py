"""Evaluation: COCO mAP through pycocotools (imported lazily), optional TIDE breakdown."""
from fastdiode.eval.coco import STAT_NAMES, coco_map, detect_folder, evaluate, format_eval_report, tide_errors

__all__ = ["STAT_NAMES", "coco_map", "detect_folder", "evaluate", "format_eval_report", "tide_errors"]
