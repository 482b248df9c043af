"""A line-by-line port of GluonCV's `VOCMApMetric.update` loop (per image, per class,
per detection), kept as the readable reference that `voc.py` is checked against and as
the baseline `bench/evaluate.py` measures. Not part of the library: the pipeline uses
`sdod.evaluate.voc`.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from sdod.evaluate.voc import F64, _ap_area, _ap_voc07, box_iou_pixels


def reference_map(
    images: list[dict], *, num_classes: int, iou_threshold: float, metric: str
) -> dict[int, float]:
    """`images[i]` holds `gt_boxes, gt_labels, gt_difficult, det_boxes, det_labels, det_scores`."""
    n_pos: dict[int, int] = defaultdict(int)
    scores: dict[int, list[float]] = defaultdict(list)
    matches: dict[int, list[int]] = defaultdict(list)
    for im in images:
        gb = np.asarray(im["gt_boxes"], np.float64).reshape(-1, 4)
        gl = np.asarray(im["gt_labels"], np.int64)
        gd = np.asarray(im["gt_difficult"], bool)
        db = np.asarray(im["det_boxes"], np.float64).reshape(-1, 4)
        dl = np.asarray(im["det_labels"], np.int64)
        ds = np.asarray(im["det_scores"], np.float64)
        for c in np.unique(np.concatenate([dl, gl])).astype(int):
            order = np.argsort(ds[dl == c], kind="stable")[::-1]
            pb, ps = db[dl == c][order], ds[dl == c][order]
            gbc, gdc = gb[gl == c], gd[gl == c]
            n_pos[c] += int((~gdc).sum())
            scores[c].extend(ps.tolist())
            if len(pb) == 0:
                continue
            if len(gbc) == 0:
                matches[c].extend([0] * len(pb))
                continue
            iou = box_iou_pixels(pb[:, None, :], gbc[None, :, :])
            gt_index = iou.argmax(axis=1)
            gt_index[iou.max(axis=1) < iou_threshold] = -1
            selected = np.zeros(len(gbc), dtype=bool)
            for g in gt_index:
                if g < 0:
                    matches[c].append(0)
                elif gdc[g]:
                    matches[c].append(-1)
                else:
                    matches[c].append(0 if selected[g] else 1)
                    selected[g] = True
    average = _ap_voc07 if metric == "voc07" else _ap_area
    aps = {}
    for c in range(num_classes):
        m = np.asarray(matches[c], np.int64)[np.argsort(-np.asarray(scores[c]), kind="stable")]
        tp, fp = np.cumsum(m == 1), np.cumsum(m == 0)
        if n_pos[c] == 0:
            aps[c] = float("nan")
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            prec: F64 = tp / (fp + tp)
        aps[c] = average(tp / n_pos[c], prec)
    return aps
