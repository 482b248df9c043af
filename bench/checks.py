"""Annotation-check speed: the suite over 100,000 boxes on 20,000 images, without decoding.

Samples are generated in memory (5 boxes per image, 3 channels of validity); the timed part
is `run_checks(..., decode=False)`: building the tables and running the Great Expectations
suite (Great Expectations' import is timed separately). Target on the 2-core machine: <= 10 s.
Run: `.venv/bin/python bench/checks.py [--images 20000 --boxes-per-image 5]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results

from sdod.data.sample import Sample, SampleSet


def make(n_images: int, per_image: int, k: int, seed: int) -> SampleSet:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n_images):
        xy = rng.uniform(0, 300, size=(per_image, 2))
        wh = rng.uniform(10, 150, size=(per_image, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, [[480, 480]])], 1).astype(np.float32)
        samples.append(
            Sample(
                f"img_{i:06d}",
                f"images/img_{i:06d}.jpg",
                480,
                480,
                boxes,
                rng.integers(0, k, per_image),
            )
        )
    return SampleSet(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--boxes-per-image", type=int, default=5)
    args = parser.parse_args()
    start = time.perf_counter()
    import great_expectations  # noqa: F401

    gx_import = time.perf_counter() - start
    from sdod.checks.gate import run_checks

    train = make(int(args.images * 0.8), args.boxes_per_image, 20, 0)
    validation = make(args.images - len(train), args.boxes_per_image, 20, 1)
    rows = []
    for run in range(2):
        start = time.perf_counter()
        report = run_checks(
            {"train": train, "validation": validation}, num_classes=20, decode=False
        )
        seconds = time.perf_counter() - start
        rows.append(
            {
                "run": run + 1,
                "images": args.images,
                "boxes": train.num_boxes + validation.num_boxes,
                "rules": len(report.rules),
                "passed": report.passed,
                "seconds": round(seconds, 2),
                "gx_import_s": round(gx_import, 2),
            }
        )
    print(table(rows, list(rows[0])))
    print(f"raw numbers: {write_results('checks', rows)}")


if __name__ == "__main__":
    main()
