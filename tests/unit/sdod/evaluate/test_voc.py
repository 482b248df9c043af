"""VOC mAP: equal to GluonCV on the fixture case, and to the per-image loop on random cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.voc_reference import reference_map
from sdod.errors import DataError, UserError
from sdod.evaluate.score import load_case, score_detections
from sdod.evaluate.voc import BoxTable, voc_map

MAP = Path(__file__).resolve().parents[3] / "fixtures" / "mxnet" / "map"
EXPECTED = json.loads((MAP / "expected.json").read_text())["results"]


@pytest.mark.parametrize("iou", [0.5, 0.7])
@pytest.mark.parametrize(
    ("metric", "gluoncv"), [("voc07", "VOC07MApMetric"), ("voc", "VOCMApMetric")]
)
def test_equals_gluoncv_on_the_fixture_case(metric: str, gluoncv: str, iou: float) -> None:
    expected = EXPECTED[f"{gluoncv}@{iou}"]
    got = score_detections(MAP / "case.json", metric=metric, iou=iou)
    for name, value in expected["per_class_and_mAP"].items():
        actual = got["mAP"] if name == "mAP" else got["per_class"][name]
        assert actual == pytest.approx(value, abs=1e-9, rel=0)
    det, gt, k, _ = load_case(MAP / "case.json")
    result = voc_map(det, gt, num_classes=k, iou_threshold=iou, metric=metric)
    for c, counts in expected["per_class_counts"].items():
        assert vars(result.counts[int(c)]) == counts


def _random_case(rng: np.random.Generator, n_images: int, k: int) -> list[dict]:
    images = []
    for _ in range(n_images):
        n_gt, n_det = int(rng.integers(0, 6)), int(rng.integers(0, 9))
        xy = rng.integers(0, 80, size=(n_gt, 2)).astype(float)
        gt = np.concatenate([xy, xy + rng.integers(5, 40, size=(n_gt, 2))], 1)
        src = gt[rng.integers(0, max(n_gt, 1), size=n_det)] if n_gt else np.zeros((n_det, 4))
        det = src + rng.normal(0, 4, size=(n_det, 4)).round()
        images.append({
            "gt_boxes": gt.tolist(), "gt_labels": rng.integers(0, k, n_gt).tolist(),
            "gt_difficult": (rng.random(n_gt) < 0.15).astype(int).tolist(),
            "det_boxes": det.tolist(), "det_labels": rng.integers(0, k, n_det).tolist(),
            # few distinct scores: many ties, inside and across images
            "det_scores": (rng.integers(1, 6, n_det) / 5).tolist(),
        })  # fmt: skip
    return images


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("metric", ["voc07", "voc"])
def test_equals_the_per_image_loop_with_ties_difficult_and_empty_images(
    seed: int, metric: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(seed)
    k = 4
    images = _random_case(rng, 60, k)
    case = {"num_classes": k, "images": images}
    path = tmp_path / "case.json"
    path.write_text(json.dumps(case))
    det, gt, _, _ = load_case(path)
    for iou in (0.3, 0.5, 0.75):
        fast = voc_map(det, gt, num_classes=k, iou_threshold=iou, metric=metric).ap
        slow = reference_map(images, num_classes=k, iou_threshold=iou, metric=metric)
        for c in range(k):
            assert (math.isnan(fast[c]) and math.isnan(slow[c])) or fast[c] == pytest.approx(
                slow[c], abs=1e-12
            )


def _dets(image: list[int], boxes: list, labels: list[int], scores: list[float]) -> BoxTable:
    return BoxTable(
        np.array(image),
        np.array(boxes, float).reshape(-1, 4),
        np.array(labels),
        scores=np.array(scores),
    )


def _gts(image: list[int], boxes: list, labels: list[int], difficult: list[bool]) -> BoxTable:
    return BoxTable(
        np.array(image),
        np.array(boxes, float).reshape(-1, 4),
        np.array(labels),
        difficult=np.array(difficult, bool),
    )


def test_duplicate_detection_is_a_false_positive_and_class_without_gt_is_nan() -> None:
    gt = _gts([0], [[10, 10, 50, 50]], [0], [False])
    det = _dets(
        [0, 0, 0], [[10, 10, 50, 50], [11, 10, 50, 50], [0, 0, 5, 5]], [0, 0, 1], [0.9, 0.8, 0.7]
    )
    result = voc_map(det, gt, num_classes=2, metric="voc")
    assert result.ap[0] == pytest.approx(1.0)  # TP first, FP after full recall
    assert math.isnan(result.ap[1])
    assert result.map == pytest.approx(1.0)  # NaN class left out of the mean
    assert (result.counts[0].tp, result.counts[0].fp) == (1, 1)


def test_match_to_difficult_is_ignored_and_pixel_plus_one_is_applied() -> None:
    gt = _gts([0, 0], [[0, 0, 9, 9], [100, 100, 140, 140]], [0, 0], [True, False])
    det = _dets([0, 0], [[0, 0, 9, 9], [100, 100, 140, 140]], [0, 0], [0.9, 0.5])
    result = voc_map(det, gt, num_classes=1, metric="voc07")
    assert vars(result.counts[0]) == {
        "n_pos": 1,
        "n_det": 2,
        "tp": 1,
        "fp": 0,
        "ignored_difficult": 1,
    }
    # [0,0,4,4] vs [0,0,9,9]: 25/100 with +1 (IoU 0.25); without it 16/81 (0.198)
    gt2 = _gts([0], [[0, 0, 9, 9]], [0], [False])
    det2 = _dets([0], [[0, 0, 4, 4]], [0], [0.9])
    assert voc_map(det2, gt2, num_classes=1, iou_threshold=0.25).ap[0] == pytest.approx(1.0)
    assert voc_map(det2, gt2, num_classes=1, iou_threshold=0.26).ap[0] == pytest.approx(0.0)


def test_no_detections_at_all_gives_zero_ap() -> None:
    gt = _gts([0], [[0, 0, 9, 9]], [0], [False])
    assert voc_map(_dets([], [], [], []), gt, num_classes=1).ap[0] == 0.0


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ({"images": []}, "'num_classes' must be a positive integer"),
        (
            {"num_classes": 2, "images": [{"gt_labels": [0], "gt_boxes": []}]},
            r"gt_boxes has 0 rows but gt_labels has 1",
        ),
        (
            {
                "num_classes": 2,
                "images": [{"det_labels": [3], "det_boxes": [[0, 0, 1, 1]], "det_scores": [1]}],
            },
            "holds class 3, but num_classes is 2",
        ),
        (
            {"num_classes": 2, "images": [{"det_boxes": [[0, 0, 1]]}]},
            r"images\[0\]\.det_boxes must be",
        ),
    ],
)
def test_malformed_cases_name_the_field(tmp_path: Path, case: dict, message: str) -> None:
    path = tmp_path / "case.json"
    path.write_text(json.dumps(case))
    with pytest.raises(DataError, match=message):
        score_detections(path)


def test_bad_metric_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--metric must be one of voc07, voc"):
        score_detections(MAP / "case.json", metric="coco")
