"""VOC mAP speed: sdod's vectorised metric vs the straightforward per-image loop.

A case like `tests/fixtures/mxnet/map/case.json` (3 classes, 0-6 ground-truth boxes and
0-9 detections per image, some difficult) scaled to 5,000 images. GluonCV's
`VOC07MApMetric` took 27 ms for the 200-image fixture case on this kind of machine
(`map/expected.json`): 0.135 ms/image, so 675 ms for 5,000; the target is 10x that rate.
Run: `.venv/bin/python bench/evaluate.py [--images 5000]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results
from voc_reference import reference_map

from sdod.evaluate.voc import BoxTable, voc_map

GLUONCV_MS_PER_IMAGE = 27.0 / 200


def make_case(n_images: int, k: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_images):
        n_gt, n_det = int(rng.integers(0, 7)), int(rng.integers(0, 10))
        xy = rng.integers(0, 400, size=(n_gt, 2)).astype(float)
        gt = np.concatenate([xy, xy + rng.integers(10, 200, size=(n_gt, 2))], 1)
        src = gt[rng.integers(0, max(n_gt, 1), size=n_det)] if n_gt else np.zeros((n_det, 4))
        det = np.round(src + rng.normal(0, 8, size=(n_det, 4)), 2)
        images.append(
            {
                "gt_boxes": gt,
                "gt_labels": rng.integers(0, k, n_gt),
                "gt_difficult": rng.random(n_gt) < 0.12,
                "det_boxes": det,
                "det_labels": rng.integers(0, k, n_det),
                "det_scores": rng.random(n_det),
            }
        )
    return images


def flatten(images: list[dict]) -> tuple[BoxTable, BoxTable]:
    def cat(name: str, width: int = 0) -> np.ndarray:
        parts = [np.asarray(im[name]) for im in images]
        return np.concatenate(parts).reshape(-1, width) if width else np.concatenate(parts)

    n_gt = [len(im["gt_labels"]) for im in images]
    n_det = [len(im["det_labels"]) for im in images]
    gt = BoxTable(
        np.repeat(np.arange(len(images)), n_gt),
        cat("gt_boxes", 4),
        cat("gt_labels"),
        difficult=cat("gt_difficult"),
    )
    det = BoxTable(
        np.repeat(np.arange(len(images)), n_det),
        cat("det_boxes", 4),
        cat("det_labels"),
        scores=cat("det_scores"),
    )
    return det, gt


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    k = 3
    images = make_case(args.images, k)
    det, gt = flatten(images)
    rows = []
    gluoncv_ms = GLUONCV_MS_PER_IMAGE * args.images
    for metric in ("voc07", "voc"):
        fast = voc_map(det, gt, num_classes=k, metric=metric)
        slow = reference_map(images, num_classes=k, iou_threshold=0.5, metric=metric)
        assert all(abs(fast.ap[c] - slow[c]) < 1e-12 for c in range(k)), "results differ"
        t_fast = timed(lambda m=metric: voc_map(det, gt, num_classes=k, metric=m), args.repeats)
        t_slow = timed(
            lambda m=metric: reference_map(images, num_classes=k, iou_threshold=0.5, metric=m), 1
        )
        rows.append(
            {
                "metric": metric,
                "images": args.images,
                "boxes": len(gt.labels),
                "detections": len(det.labels),
                "sdod_ms": round(t_fast * 1000, 1),
                "per_image_loop_ms": round(t_slow * 1000, 1),
                "gluoncv_scaled_ms": round(gluoncv_ms, 1),
                "speedup_vs_gluoncv": round(gluoncv_ms / (t_fast * 1000), 1),
                "mAP": round(fast.map, 6),
            }
        )
    print(table(rows, list(rows[0])))
    print(f"raw numbers: {write_results('evaluate', rows)}")


if __name__ == "__main__":
    main()
