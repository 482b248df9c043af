"""VOC mAP with GluonCV's exact semantics (`VOC07MApMetric`, `VOCMApMetric`), vectorised.

- Boxes are pixel `[xmin, ymin, xmax, ymax]`; like GluonCV (the VOC integer-pixel
  convention) 1 is added to `xmax`/`ymax` of detections and ground truth before IoU.
- Per image and class, detections are taken in descending score; each is matched to the
  ground-truth box it overlaps most (already-matched and difficult boxes included). Below
  `iou_threshold`: false positive. Best box difficult: ignored. Otherwise the first
  detection to claim a box is a true positive and later ones are false positives.
- A class without (non-difficult) ground truth has AP NaN and is left out of the mean.
- `voc07`: 11-point interpolated AP at recall `np.arange(0, 1.1, 0.1)`; `voc`: area under
  the monotone precision envelope.

Equal scores: within an image, the later detection goes first (what GluonCV's
`argsort()[::-1]` does for the short per-image lists); across images the order of images
is kept. The greedy matching above is computed without a Python loop over boxes: after
sorting, "first to claim a box" is the first occurrence of that box's index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

METRICS = ("voc07", "voc")
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class BoxTable:
    """Boxes of a whole dataset as flat arrays, detections (with `scores`) or ground truth
    (with `difficult`); `image` is each row's image index."""

    image: I64
    boxes: F64  # [N, 4] pixels
    labels: I64
    scores: F64 | None = None  # detections only
    difficult: npt.NDArray[np.bool_] | None = None  # ground truth only


@dataclass
class ClassCounts:
    n_pos: int = 0
    n_det: int = 0
    tp: int = 0
    fp: int = 0
    ignored_difficult: int = 0


@dataclass
class VocResult:
    metric: str
    iou_threshold: float
    ap: dict[int, float]  # class id -> AP (NaN: no ground truth)
    map: float
    counts: dict[int, ClassCounts] = field(default_factory=dict)
    recall: dict[int, F64] = field(default_factory=dict)
    precision: dict[int, F64] = field(default_factory=dict)


def box_iou_pixels(a: F64, b: F64) -> F64:
    """Row-wise IoU of `a[i]` and `b[i]` with GluonCV's +1 on xmax/ymax."""
    a = np.concatenate([a[..., :2], a[..., 2:] + 1], axis=-1)
    b = np.concatenate([b[..., :2], b[..., 2:] + 1], axis=-1)
    tl = np.maximum(a[..., :2], b[..., :2])
    br = np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(br - tl, axis=-1) * (tl < br).all(axis=-1)
    area_a = np.prod(a[..., 2:] - a[..., :2], axis=-1)
    area_b = np.prod(b[..., 2:] - b[..., :2], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_a + area_b - inter)


def match_detections(
    det: BoxTable, gt: BoxTable, num_classes: int, iou_threshold: float
) -> tuple[I64, I64]:
    """Per-detection outcome (1 TP, 0 FP, -1 ignored) and the order used (image, class, score)."""
    assert det.scores is not None and gt.difficult is not None
    n = len(det.labels)
    # Within an image and class: descending score, ties -> higher index first.
    order = np.lexsort((-np.arange(n), -det.scores, det.labels, det.image))
    det_key = det.image[order] * num_classes + det.labels[order]
    gt_order = np.lexsort((gt.labels, gt.image))  # stable: keeps GT order inside a group
    gt_key = gt.image[gt_order] * num_classes + gt.labels[gt_order]
    start = np.searchsorted(gt_key, det_key, "left")
    count = np.searchsorted(gt_key, det_key, "right") - start
    width = int(count.max()) if n else 0
    outcome = np.zeros(n, dtype=np.int64)
    if width == 0:
        return outcome, order
    slot = np.arange(width)
    cand = np.minimum(start[:, None] + slot, max(len(gt_order) - 1, 0))
    gt_idx = gt_order[cand]  # [n, width] original GT rows
    iou = box_iou_pixels(det.boxes[order][:, None, :], gt.boxes[gt_idx])
    iou = np.where(slot < count[:, None], np.nan_to_num(iou, nan=-1.0), -np.inf)
    best = iou.argmax(axis=1)
    hit = iou[np.arange(n), best] >= iou_threshold
    target = np.where(hit, gt_idx[np.arange(n), best], -1)
    difficult = hit & gt.difficult[np.maximum(target, 0)]
    claimable = hit & ~difficult
    first = np.zeros(n, dtype=bool)
    _, first_pos = np.unique(np.where(claimable, target, -1), return_index=True)
    first[first_pos] = True
    outcome[claimable & first] = 1
    outcome[difficult] = -1
    return outcome, order


def _ap_voc07(rec: F64, prec: F64) -> float:
    thresholds = np.arange(0.0, 1.1, 0.1)
    mask = rec[None, :] >= thresholds[:, None]
    p = np.where(mask, np.nan_to_num(prec)[None, :], -np.inf).max(axis=1, initial=-np.inf)
    return float(np.sum(np.where(np.isfinite(p), p, 0.0) / 11.0))


def _ap_area(rec: F64, prec: F64) -> float:
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], np.nan_to_num(prec), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def voc_map(
    det: BoxTable,
    gt: BoxTable,
    *,
    num_classes: int,
    iou_threshold: float = 0.5,
    metric: str = "voc07",
) -> VocResult:
    """mAP of `det` against `gt` (negative labels are padding and dropped)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    det = _valid(det)
    gt = _valid(gt)
    outcome, order = match_detections(det, gt, num_classes, iou_threshold)
    labels, scores = det.labels[order], det.scores[order]  # type: ignore[index]
    average = _ap_voc07 if metric == "voc07" else _ap_area
    result = VocResult(metric, iou_threshold, {}, float("nan"))
    for c in range(num_classes):
        mine = labels == c
        m, s = outcome[mine], scores[mine]
        m = m[np.argsort(-s, kind="stable")]
        tp, fp = np.cumsum(m == 1), np.cumsum(m == 0)
        n_pos = int(np.sum((gt.labels == c) & ~gt.difficult))  # type: ignore[operator]
        counts = ClassCounts(
            n_pos,
            int(mine.sum()),
            int(tp[-1]) if m.size else 0,
            int(fp[-1]) if m.size else 0,
            int(np.sum(m == -1)),
        )
        result.counts[c] = counts
        if n_pos == 0:
            result.ap[c] = float("nan")
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = tp / (fp + tp)
        rec = tp / n_pos
        result.recall[c], result.precision[c] = rec, prec
        result.ap[c] = average(rec, prec)
    aps = np.array(list(result.ap.values()), dtype=np.float64)
    result.map = float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")
    return result


def _valid(d: BoxTable) -> BoxTable:
    keep = d.labels >= 0
    return BoxTable(
        np.asarray(d.image, np.int64)[keep],
        np.asarray(d.boxes, np.float64).reshape(-1, 4)[keep],
        np.asarray(d.labels, np.int64)[keep],
        None if d.scores is None else np.asarray(d.scores, np.float64)[keep],
        None if d.difficult is None else np.asarray(d.difficult, bool)[keep],
    )
