"""COCO mAP (AP at IoU .50:.05:.95, AP50, AP75, AP by object size, AR) through faster-coco-eval.

Conventions, so a number can be reproduced with pycocotools: boxes become COCO's
`[x, y, width, height]` with `width = xmax - xmin` (no VOC `+1`), `area` is width × height,
a `difficult` box is passed as `iscrowd=1` (a detection matching it is neither a true nor a
false positive), and image sizes are the images' real sizes. Class ids are the model's
0-based ids; COCO's category ids are the same numbers plus one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdod.evaluate.voc import BoxTable

STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


@dataclass
class CocoResult:
    stats: dict[str, float | None]  # STAT_NAMES -> value (None: nothing to measure)
    ap: dict[int, float | None] = field(default_factory=dict)  # class id -> AP .50:.95

    @property
    def map(self) -> float | None:
        return self.stats["AP"]


def _xywh(boxes: np.ndarray) -> np.ndarray:
    out = boxes.astype(np.float64).reshape(-1, 4).copy()
    out[:, 2:] -= out[:, :2]
    return out


def coco_dicts(
    det: BoxTable, gt: BoxTable, sizes: Sequence[tuple[int, int]], num_classes: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ground-truth dataset and the result list in COCO's JSON shapes."""
    images = [{"id": i + 1, "width": int(w), "height": int(h)} for i, (w, h) in enumerate(sizes)]
    categories = [{"id": c + 1, "name": str(c)} for c in range(num_classes)]
    gt_xywh = _xywh(gt.boxes)
    difficult = gt.difficult if gt.difficult is not None else np.zeros(len(gt.labels), bool)
    annotations = [
        {
            "id": n + 1,
            "image_id": int(gt.image[n]) + 1,
            "category_id": int(gt.labels[n]) + 1,
            "bbox": gt_xywh[n].tolist(),
            "area": float(gt_xywh[n, 2] * gt_xywh[n, 3]),
            "iscrowd": int(bool(difficult[n])),
        }
        for n in range(len(gt.labels))
    ]
    det_xywh = _xywh(det.boxes)
    scores = det.scores if det.scores is not None else np.ones(len(det.labels))
    results = [
        {
            "image_id": int(det.image[n]) + 1,
            "category_id": int(det.labels[n]) + 1,
            "bbox": det_xywh[n].tolist(),
            "score": float(scores[n]),
        }
        for n in range(len(det.labels))
        if 0 <= det.labels[n] < num_classes
    ]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _number(value: float) -> float | None:
    return None if value < 0 or math.isnan(value) else float(value)


def coco_map(
    det: BoxTable, gt: BoxTable, sizes: Sequence[tuple[int, int]], num_classes: int
) -> CocoResult:
    """COCO metrics of `det` against `gt` (pixel `[xmin, ymin, xmax, ymax]`) on images of
    `sizes` (width, height), in the order of `BoxTable.image`."""
    from faster_coco_eval import COCO, COCOeval_faster

    dataset, results = coco_dicts(det, gt, sizes, num_classes)
    coco_gt = COCO(dataset)
    if not results:  # loadRes refuses an empty list: nothing was detected, every AP is 0
        has_gt = {int(c) for c in gt.labels}
        stats: dict[str, float | None] = dict.fromkeys(STAT_NAMES, 0.0 if has_gt else None)
        ap = {c: (0.0 if c in has_gt else None) for c in range(num_classes)}
        return CocoResult(stats, ap)
    coco_dt = coco_gt.loadRes(results)
    evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *_: None)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    stats = {name: _number(v) for name, v in zip(STAT_NAMES, evaluator.stats, strict=False)}
    precision = np.asarray(evaluator.eval["precision"])  # [iou, recall, class, area, maxdets]
    ap = {}
    for c in range(num_classes):
        p = precision[:, :, c, 0, -1]
        p = p[p > -1]
        ap[c] = float(p.mean()) if p.size else None
    return CocoResult(stats, ap)
