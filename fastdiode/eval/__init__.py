"""Evaluation: COCO mAP through pycocotools and TIDE's error breakdown through tidecv (both imported lazily)."""
from fastdiode.eval.coco import (
                                 STAT_NAMES,
                                 TIDE_MAIN,
                                 TIDE_SPECIAL,
                                 coco_map,
                                 detect_folder,
                                 evaluate,
                                 format_eval_report,
                                 tide_errors,
)

__all__ = ["STAT_NAMES", "TIDE_MAIN", "TIDE_SPECIAL", "coco_map", "detect_folder", "evaluate", "format_eval_report",
           "tide_errors"]
