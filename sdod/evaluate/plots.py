"""Evaluation pictures, drawn with Pillow (no plotting library): one precision-recall
curve per class and a few example images with true (green) and predicted (red) boxes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sdod.data.images import read_image_bytes
from sdod.data.sample import Sample
from sdod.evaluate.voc import BoxTable

WIDTH, HEIGHT, MARGIN = 480, 400, 50
GREEN, RED, GREY, BLACK = (0, 170, 0), (220, 30, 30), (210, 210, 210), (0, 0, 0)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "class"


def pr_curve(recall: np.ndarray, precision: np.ndarray, title: str, path: Path) -> Path:
    """Precision (y) over recall (x), both 0..1, with a 0.1 grid."""
    im = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(im)
    left, top, right, bottom = MARGIN, 44, WIDTH - 20, HEIGHT - MARGIN

    def xy(r: float, p: float) -> tuple[float, float]:
        return left + r * (right - left), bottom - p * (bottom - top)

    for i in range(11):
        v = i / 10
        draw.line([xy(v, 0), xy(v, 1)], fill=GREY)
        draw.line([xy(0, v), xy(1, v)], fill=GREY)
        draw.text((xy(v, 0)[0] - 8, bottom + 6), f"{v:.1f}", fill=BLACK)
        draw.text((left - 30, xy(0, v)[1] - 6), f"{v:.1f}", fill=BLACK)
    draw.rectangle([left, top, right, bottom], outline=BLACK)
    draw.text((left, 6), title, fill=BLACK)
    draw.text(((left + right) / 2 - 18, HEIGHT - 20), "recall", fill=BLACK)
    draw.text((4, top - 20), "precision", fill=BLACK)
    ok = np.isfinite(recall) & np.isfinite(precision)
    points = [xy(float(r), float(p)) for r, p in zip(recall[ok], precision[ok], strict=True)]
    if len(points) > 1:
        draw.line(points, fill=RED, width=2)
    elif points:
        x, y = points[0]
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=RED)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def example(
    sample: Sample,
    det: BoxTable,
    index: int,
    class_names: Sequence[str],
    path: Path,
    *,
    min_score: float = 0.3,
) -> Path:
    """The image with its true boxes (green) and detections scoring ≥ `min_score` (red);
    when none does, the best few (as many as there are true boxes), so the picture still
    shows what the model sees."""
    from io import BytesIO

    with Image.open(BytesIO(read_image_bytes(sample.image))) as src:
        im = src.convert("RGB")
    draw = ImageDraw.Draw(im)
    for box, label in zip(sample.boxes, sample.labels, strict=True):
        draw.rectangle([float(v) for v in box], outline=GREEN, width=2)
        draw.text((float(box[0]) + 3, float(box[1]) + 2), class_names[int(label)], fill=GREEN)
    scores = det.scores if det.scores is not None else np.ones(len(det.labels))
    mine = np.flatnonzero(det.image == index)
    mine = mine[np.argsort(-scores[mine], kind="stable")]
    confident = mine[scores[mine] >= min_score]
    shown = confident if confident.size else mine[: max(1, len(sample.labels))]
    for box, label, score in zip(det.boxes[shown], det.labels[shown], scores[shown], strict=True):
        draw.rectangle([float(v) for v in box], outline=RED, width=2)
        text = f"{class_names[int(label)]} {float(score):.2f}"
        draw.text((float(box[0]) + 3, float(box[3]) - 12), text, fill=RED)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path
