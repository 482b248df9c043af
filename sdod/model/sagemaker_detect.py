"""MXNet's `_contrib_MultiBoxDetection` (CPU), the decoder behind SageMaker's endpoint.

Per anchor, in float32: the class is the first argmax over the object classes (class 0 is
background) and the score its probability; the anchor is a candidate when the score is at
least `threshold`. Its box is `cx = ax + dx * v0 * aw`, `w = aw * exp(dw * v2)` (same for
y/h), as corners, clipped to [0, 1] when `clip`. Candidates are stable-sorted by score,
descending; the first `nms_topk` (all when -1) go through greedy NMS: a row suppresses
later rows of its class (of any class with `force_suppress`) whose IoU (`I / (A1 + A2 - I)`)
is at least `nms_threshold`.

The raw output `[N, 6]` rows are `[class, score, xmin, ymin, xmax, ymax]`: the kept rows in
sorted order, suppressed ones with class -1; rows from `nms_topk` to the candidate count
keep the unsorted candidates with class -1; the rest are -1.
"""

from __future__ import annotations

import numpy as np

from sdod.model.sagemaker_graph import Detection

F32 = np.float32


def decode_boxes(
    loc: np.ndarray, anchors: np.ndarray, variances: tuple[float, ...], clip: bool
) -> np.ndarray:
    """`[N, 4]` offsets against `[N, 4]` corner anchors -> `[N, 4]` corners (float32)."""
    al, at, ar, ab = (anchors[:, k].astype(F32) for k in range(4))
    aw, ah = ar - al, ab - at
    ax, ay = (al + ar) / F32(2), (at + ab) / F32(2)
    vx, vy, vw, vh = (F32(v) for v in variances)
    px, py, pw, ph = (loc[:, k].astype(F32) for k in range(4))
    ox, oy = px * vx * aw + ax, py * vy * ah + ay
    ow, oh = np.exp(pw * vw) * aw / F32(2), np.exp(ph * vh) * ah / F32(2)
    boxes = np.stack([ox - ow, oy - oh, ox + ow, oy + oh], axis=1).astype(F32)
    return np.clip(boxes, F32(0), F32(1)) if clip else boxes


def _iou_row(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    w = np.maximum(F32(0), np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]))
    h = np.maximum(F32(0), np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]))
    inter = w * h
    union = (
        (box[2] - box[0]) * (box[3] - box[1])
        + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
        - inter
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union <= F32(0), F32(0), inter / union).astype(F32)


def _nms(rows: np.ndarray, threshold: float, force_suppress: bool) -> None:
    """Greedy NMS on `rows` (sorted), in place: suppressed rows get class -1."""
    thr = F32(threshold)
    for i in range(len(rows)):
        if rows[i, 0] < 0:
            continue
        rest = rows[i + 1 :]
        live = rest[:, 0] >= 0
        if not force_suppress:
            live &= rest[:, 0] == rows[i, 0]
        if not live.any():
            continue
        hit = live & (_iou_row(rows[i, 2:], rest[:, 2:]) >= thr)
        rest[hit, 0] = -1


def multibox_detection(
    cls_prob: np.ndarray, loc: np.ndarray, anchors: np.ndarray, attrs: Detection
) -> np.ndarray:
    """One image: `cls_prob [K + 1, N]`, `loc [N, 4]` (or `[4N]`), `anchors [N, 4]` corners
    -> MXNet's raw `[N, 6]` output (see the module docstring)."""
    prob = np.asarray(cls_prob, F32)
    n = prob.shape[1]
    loc = np.asarray(loc, F32).reshape(n, 4)
    out = np.full((n, 6), -1, F32)
    if prob.shape[0] < 2:
        return out
    objects = prob[1:]
    label = objects.argmax(axis=0)  # the first maximum, as MXNet's `temp > score` loop
    score = objects[label, np.arange(n)]
    valid = np.flatnonzero(score >= F32(attrs.threshold))
    boxes = decode_boxes(loc[valid], np.asarray(anchors, F32)[valid], attrs.variances, attrs.clip)
    candidates = np.concatenate(
        [label[valid, None].astype(F32), score[valid, None], boxes], axis=1
    ).astype(F32)
    count = len(candidates)
    out[:count] = candidates
    if count < 1 or not 0 < attrs.nms_threshold <= 1:
        return out
    order = np.argsort(-candidates[:, 1], kind="stable")
    keep = count if not 0 < attrs.nms_topk < count else attrs.nms_topk
    out[keep:count, 0] = -1
    out[:keep] = candidates[order[:keep]]
    _nms(out[:keep], attrs.nms_threshold, attrs.force_suppress)
    return out


def detections(raw: np.ndarray) -> np.ndarray:
    """The rows of a raw output that are detections (class >= 0), in output order."""
    return raw[raw[:, 0] >= 0]
