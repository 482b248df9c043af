"""COCO mAP through faster-coco-eval equals pycocotools' COCOeval on the same case."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from sdod.evaluate.coco import STAT_NAMES, coco_dicts, coco_map
from sdod.evaluate.score import load_case
from sdod.evaluate.voc import BoxTable

MAP = Path(__file__).resolve().parents[3] / "fixtures" / "mxnet" / "map"


def _pycocotools(dataset: dict, results: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(dataset))
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(results))), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats), np.asarray(ev.eval["precision"])


def test_equals_pycocotools_on_the_fixture_case() -> None:
    det, gt, k, _ = load_case(MAP / "case.json")
    case = json.loads((MAP / "case.json").read_text())
    sizes = [(im["width"], im["height"]) for im in case["images"]]
    assert int(gt.difficult.sum()) > 0  # difficult boxes exercised (iscrowd)
    got = coco_map(det, gt, sizes, k)
    stats, precision = _pycocotools(*coco_dicts(det, gt, sizes, k))
    for name, value in zip(STAT_NAMES, stats, strict=True):
        assert got.stats[name] == pytest.approx(value, abs=1e-9), name
    for c in range(k):
        p = precision[:, :, c, 0, -1]
        assert got.ap[c] == pytest.approx(float(p[p > -1].mean()), abs=1e-9)
    assert 0 < got.stats["AP"] < got.stats["AP50"] <= 1  # type: ignore[operator]


def test_perfect_detections_score_one_and_nothing_detected_scores_zero() -> None:
    gt = BoxTable(
        np.array([0, 0, 1]),
        np.array([[10, 10, 60, 80], [100, 20, 180, 90], [5, 5, 200, 150]], dtype=np.float64),
        np.array([0, 1, 1]),
        difficult=np.zeros(3, bool),
    )
    perfect = BoxTable(gt.image, gt.boxes, gt.labels, scores=np.array([0.9, 0.8, 0.7]))
    sizes = [(320, 240), (320, 240)]
    result = coco_map(perfect, gt, sizes, num_classes=3)
    assert result.map == pytest.approx(1.0) and result.stats["AP75"] == pytest.approx(1.0)
    assert result.ap == {0: pytest.approx(1.0), 1: pytest.approx(1.0), 2: None}
    empty = BoxTable(
        np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64), scores=np.zeros(0)
    )
    nothing = coco_map(empty, gt, sizes, num_classes=3)
    assert nothing.map == 0.0 and nothing.ap == {0: 0.0, 1: 0.0, 2: None}
