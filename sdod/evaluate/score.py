"""`sdod score-detections`: mAP of precomputed detections stored as a case JSON.

```
{"num_classes": K, "class_names": [...optional...],
 "images": [{"gt_boxes": [[x0, y0, x1, y1], ...], "gt_labels": [...], "gt_difficult": [...],
             "det_boxes": [...], "det_labels": [...], "det_scores": [...]}, ...]}
```
Boxes are pixel `[xmin, ymin, xmax, ymax]`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from sdod.errors import DataError, UserError
from sdod.evaluate.voc import METRICS, BoxTable, VocResult, voc_map
from sdod.storage import read_json


def _column(im: dict, name: str, boxes: bool, where: str) -> np.ndarray:
    try:
        values = np.asarray(im.get(name, []), dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}.{name} must be a list of numbers") from None
    if boxes:
        if values.size and (values.ndim != 2 or values.shape[1] != 4):
            raise DataError(f"{where}.{name} must be [[xmin, ymin, xmax, ymax], ...]")
        return values.reshape(-1, 4)
    if values.ndim > 1:
        raise DataError(f"{where}.{name} must be a flat list, got shape {values.shape}")
    return values.reshape(-1)


def _image(im: Any, where: str) -> dict[str, np.ndarray]:
    if not isinstance(im, dict):
        raise DataError(f"{where} must be an object")
    cols = {
        name: _column(im, name, name.endswith("boxes"), where)
        for name in (
            "gt_boxes",
            "gt_labels",
            "gt_difficult",
            "det_boxes",
            "det_labels",
            "det_scores",
        )
    }
    if "gt_difficult" not in im:
        cols["gt_difficult"] = np.zeros(len(cols["gt_labels"]))
    for prefix, others in (("gt", ("boxes", "difficult")), ("det", ("boxes", "scores"))):
        n = len(cols[f"{prefix}_labels"])
        for other in others:
            if len(cols[f"{prefix}_{other}"]) != n:
                raise DataError(
                    f"{where}: {prefix}_{other} has {len(cols[f'{prefix}_{other}'])} rows "
                    f"but {prefix}_labels has {n}"
                )
    return cols


def _flat(images: list[dict[str, np.ndarray]], prefix: str, extra: str) -> BoxTable:
    counts = [len(im[f"{prefix}_labels"]) for im in images]
    image = np.repeat(np.arange(len(images)), counts).astype(np.int64)
    boxes = np.concatenate([im[f"{prefix}_boxes"] for im in images] or [np.zeros((0, 4))])
    labels = np.concatenate([im[f"{prefix}_labels"] for im in images] or [np.zeros(0)])
    values = np.concatenate([im[extra] for im in images] or [np.zeros(0)])
    if prefix == "gt":
        return BoxTable(image, boxes, labels.astype(np.int64), difficult=values.astype(bool))
    return BoxTable(image, boxes, labels.astype(np.int64), scores=values)


def load_case(path: str | Path) -> tuple[BoxTable, BoxTable, int, list[str]]:
    """Detections and ground truth (two BoxTables) from a case file; DataError names the
    bad image/field."""
    path = Path(path)
    case = read_json(path, "case file")
    if not isinstance(case, dict) or not isinstance(case.get("images"), list):
        raise DataError(f"{path}: expected an object with an 'images' list")
    num_classes = case.get("num_classes")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise DataError(f"{path}: 'num_classes' must be a positive integer, got {num_classes!r}")
    images = [_image(im, f"{path}: images[{i}]") for i, im in enumerate(case["images"])]
    gt, det = _flat(images, "gt", "gt_difficult"), _flat(images, "det", "det_scores")
    for name, labels in (("gt_labels", gt.labels), ("det_labels", det.labels)):
        if labels.size and labels.max() >= num_classes:
            raise DataError(
                f"{path}: {name} holds class {labels.max()}, but num_classes is {num_classes}"
            )
    names = case.get("class_names") or [str(c) for c in range(num_classes)]
    return det, gt, num_classes, [str(n) for n in names]


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def summary(result: VocResult, class_names: list[str]) -> dict[str, Any]:
    """`{"per_class": {name: AP or null}, "mAP": x}` plus the metric settings."""
    return {
        "metric": result.metric,
        "iou_threshold": result.iou_threshold,
        "per_class": {class_names[c]: _number(ap) for c, ap in result.ap.items()},
        "mAP": _number(result.map),
    }


def score_detections(
    path: str | Path, *, metric: str = "voc07", iou: float = 0.5
) -> dict[str, Any]:
    """Score a case file; the result is JSON-able (NaN becomes null)."""
    if metric not in METRICS:
        raise UserError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not 0 < iou <= 1:
        raise UserError(f"--iou must be in (0, 1], got {iou}")
    det, gt, num_classes, names = load_case(path)
    result = voc_map(det, gt, num_classes=num_classes, iou_threshold=iou, metric=metric)
    return summary(result, names)
