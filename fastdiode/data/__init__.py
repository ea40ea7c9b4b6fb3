"""Dataset readers and writers (YOLO txt, COCO json), image loading and letterboxing."""
from fastdiode.data.images import (
                                   IMAGE_SUFFIXES,
                                   Letterbox,
                                   boxes_to_canvas,
                                   detections_to_original,
                                   letterbox,
                                   read_image,
                                   write_png,
)
from fastdiode.data.labels import CocoLabels, coco_dict, read_yolo_labels, write_coco_json, write_yolo_labels

__all__ = ["IMAGE_SUFFIXES", "CocoLabels", "Letterbox", "boxes_to_canvas", "coco_dict", "detections_to_original",
           "letterbox", "read_image", "read_yolo_labels", "write_coco_json", "write_png", "write_yolo_labels"]
