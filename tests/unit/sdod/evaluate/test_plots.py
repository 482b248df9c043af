"""Evaluation pictures: PR curves and example images, checked pixel by pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sdod.data.sample import Sample
from sdod.evaluate import plots
from sdod.evaluate.voc import BoxTable

RED, GREEN = np.array(plots.RED), np.array(plots.GREEN)


def _count(path: Path, colour: np.ndarray) -> int:
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    return int((pixels == colour).all(axis=1).sum())


def _scene(tmp_path: Path) -> Sample:
    Image.new("RGB", (200, 150), (128, 128, 128)).save(tmp_path / "a.jpg")
    return Sample(
        "a", str(tmp_path / "a.jpg"), 200, 150,
        np.array([[20, 20, 80, 90]], np.float32), np.array([1]),
    )  # fmt: skip


def _det(score: float) -> BoxTable:
    return BoxTable(
        np.array([0, 0]),
        np.array([[30, 30, 90, 100], [100, 40, 180, 120]], dtype=np.float64),
        np.array([1, 0]),
        scores=np.array([score, score / 2]),
    )


def test_example_draws_true_boxes_and_confident_detections(tmp_path: Path) -> None:
    sample = _scene(tmp_path)
    both = plots.example(sample, _det(0.9), 0, ["a", "b"], tmp_path / "both.png")
    only_confident = plots.example(sample, _det(0.5), 0, ["a", "b"], tmp_path / "one.png")
    assert _count(both, GREEN) > 200 and _count(both, RED) > _count(only_confident, RED) > 200
    with Image.open(both) as im:
        assert im.size == (200, 150)


def test_example_without_confident_detections_still_shows_the_best_one(tmp_path: Path) -> None:
    out = plots.example(_scene(tmp_path), _det(0.05), 0, ["a", "b"], tmp_path / "weak.png")
    assert _count(out, RED) > 200


def test_pr_curve_is_drawn_inside_the_axes(tmp_path: Path) -> None:
    recall = np.array([0.1, 0.4, 0.6, 0.8])
    precision = np.array([1.0, 0.8, 0.5, 0.3])
    out = plots.pr_curve(recall, precision, "class a", tmp_path / "pr.png")
    with Image.open(out) as im:
        assert im.size == (plots.WIDTH, plots.HEIGHT)
    assert _count(out, RED) > 300
    empty = plots.pr_curve(np.array([]), np.array([]), "no detections", tmp_path / "none.png")
    assert _count(empty, RED) == 0
