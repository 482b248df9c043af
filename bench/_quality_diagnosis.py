"""Where a trained model loses mAP: the diagnosis table of `docs/quality.md`.

Scores weights saved by `_quality_ablation.py --save` on the validation images and on the
first 120 training images (un-augmented): mAP at 0.5, class-agnostic mAP, mAP at IoU 0.3
and 0.7, mAP per object size (pixels at the network's input, square root of the area;
objects of other sizes are marked difficult, so they are ignored rather than missed), and
the highest recall reached per class.

    .venv/bin/python bench/_quality_diagnosis.py /tmp/row21.pt [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _quality_ablation as ablation
import _quality_changes as patches

from sdod.evaluate.detect import detect, ground_truth
from sdod.evaluate.voc import voc_map
from sdod.model.ssd import SSD, SSDConfig

SIZES = ((0, 45), (45, 70), (70, 100), (100, 10_000))


def report(model: SSD, samples: list, name: str) -> None:
    gt, num = ground_truth(samples), model.config.num_classes
    det = detect(model, samples, device=torch.device("cpu"))
    assert det is not None
    aware = voc_map(det, gt, num_classes=num, iou_threshold=0.5)
    agnostic = voc_map(
        replace(det, labels=det.labels * 0), replace(gt, labels=gt.labels * 0),
        num_classes=1, iou_threshold=0.5,
    )  # fmt: skip
    loose, tight = (voc_map(det, gt, num_classes=num, iou_threshold=t).map for t in (0.3, 0.7))
    print(f"{name}: mAP {aware.map:.3f}, class-agnostic {agnostic.map:.3f}, "
          f"IoU 0.3 {loose:.3f}, IoU 0.7 {tight:.3f}")  # fmt: skip
    s = model.config.image_size
    w = np.array([x.width for x in samples], np.float64)[gt.image]
    h = np.array([x.height for x in samples], np.float64)[gt.image]
    b = gt.boxes
    size = np.sqrt((b[:, 2] - b[:, 0]) * s / w * (b[:, 3] - b[:, 1]) * s / h)
    for lo, hi in SIZES:
        inside = (size >= lo) & (size < hi)
        only = voc_map(det, replace(gt, difficult=~inside), num_classes=num, iou_threshold=0.5)
        print(f"  objects {lo}-{hi} px: {int(inside.sum())} boxes, mAP {only.map:.3f}")
    recall = {k: round(float(v[-1]) if len(v) else 0.0, 3) for k, v in aware.recall.items()}
    print(f"  highest recall per class: {recall}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("--data", default="/tmp/sdod-quality/bucket")
    a = ap.parse_args()
    saved = torch.load(a.weights, weights_only=False)
    patches.apply(saved.get("changes", {}))  # the patched layout the weights were trained in
    model = SSD(SSDConfig(**saved["config"]))
    patches.after_model(model, saved.get("changes", {}))
    model.load_state_dict(saved["state"])
    train, validation = ablation.load(Path(a.data))
    report(model, validation, "validation")
    report(model, train[:120], "train (first 120)")


if __name__ == "__main__":
    main()
