"""A deterministic generator of small, real, learnable detection datasets.

Images are JPEG "photographs" of textured scenes (smooth colour fields, grain, clutter
lines) with 1-8 objects each. The class of an object is its *shape*; colour, size,
aspect, rotation, shading and position vary independently of the class, and later objects
may partly occlude earlier ones, so a detector must learn shape to score well.

Every image is drawn from its own generator seeded by `(seed, split, index)`, so the
output is byte-identical for the same arguments and any single image can be reproduced.
"""

from __future__ import annotations

import functools
import io
import math
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from sdod.data.sample import Sample

CLASS_NAMES = ("circle", "rectangle", "triangle", "cross", "star", "ring", "diamond", "hexagon")
MAX_CLASSES = len(CLASS_NAMES)
SUPERSAMPLE = 2  # draw at 2x and downsample: anti-aliased edges, like a camera's
JPEG_QUALITY = 90
MAX_OBJECTS = 8
MAX_IOU_BETWEEN_OBJECTS = 0.35
MAX_COVERED_FRACTION = 0.4  # a new object hides at most this much of an earlier one's box
PARALLEL_FROM = 64  # images in a split before generate_split draws them in processes


@dataclass(frozen=True)
class GeneratedImage:
    sample: Sample
    jpeg: bytes


def _regular(n: int, phase: float = 0.0) -> list[tuple[float, float]]:
    return [
        (math.cos(phase + 2 * math.pi * k / n), math.sin(phase + 2 * math.pi * k / n))
        for k in range(n)
    ]


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    out = []
    for k in range(2 * points):
        r = 1.0 if k % 2 == 0 else inner
        a = -math.pi / 2 + math.pi * k / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


_CROSS = [
    (-0.33, -1), (0.33, -1), (0.33, -0.33), (1, -0.33), (1, 0.33), (0.33, 0.33),
    (0.33, 1), (-0.33, 1), (-0.33, 0.33), (-1, 0.33), (-1, -0.33), (-0.33, -0.33),
]  # fmt: skip

# Unit outlines in [-1, 1]^2; a ring is an outer outline with a hole (second entry).
SHAPES: dict[str, tuple[list[tuple[float, float]], list[tuple[float, float]] | None]] = {
    "circle": (_regular(64), None),
    "rectangle": ([(-1, -1), (1, -1), (1, 1), (-1, 1)], None),
    "triangle": ([(0, -1), (1, 1), (-1, 1)], None),
    "cross": (_CROSS, None),
    "star": (_star(), None),
    "ring": (_regular(64), [(0.55 * x, 0.55 * y) for x, y in _regular(64)]),
    "diamond": ([(0, -1), (1, 0), (0, 1), (-1, 0)], None),
    "hexagon": (_regular(6), None),
}
# Shapes whose identity survives any rotation get none; the rest only a small tilt, so a
# rectangle never turns into a diamond.
MAX_TILT_DEG = {"circle": 0.0, "ring": 0.0, "rectangle": 12.0, "diamond": 12.0}


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour field + grain + a few clutter lines."""
    coarse = rng.uniform(0, 255, size=(rng.integers(3, 7), rng.integers(3, 7), 3))
    base = Image.fromarray(coarse.astype(np.uint8))
    smooth = np.asarray(base.resize((width, height), Image.Resampling.BICUBIC), np.float32)
    pixels = 0.55 * smooth + 0.45 * rng.uniform(40, 215, size=3)
    pixels += rng.normal(0, rng.uniform(3, 12), size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(0, 6)):
        xy = rng.uniform(0, 1, size=4) * [width, height, width, height]
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.line(list(map(float, xy)), fill=colour, width=int(rng.integers(1, 3) * SUPERSAMPLE))
    return image


def _outline(
    points: list[tuple[float, float]], cx: float, cy: float, rx: float, ry: float, tilt: float
) -> list[tuple[float, float]]:
    c, s = math.cos(tilt), math.sin(tilt)
    return [(cx + rx * x * c - ry * y * s, cy + rx * x * s + ry * y * c) for x, y in points]


def _overlaps(new: np.ndarray, old: np.ndarray) -> bool:
    """True when `new` would overlap `old` too much (IoU, or the share of `old` it covers)."""
    ix = max(0.0, min(new[2], old[2]) - max(new[0], old[0]))
    iy = max(0.0, min(new[3], old[3]) - max(new[1], old[1]))
    inter = ix * iy
    area_new = (new[2] - new[0]) * (new[3] - new[1])
    area_old = (old[2] - old[0]) * (old[3] - old[1])
    iou = inter / (area_new + area_old - inter)
    return iou >= MAX_IOU_BETWEEN_OBJECTS or inter / area_old >= MAX_COVERED_FRACTION


def _paint(
    rng: np.random.Generator, canvas: Image.Image, name: str, box_hint: tuple[float, ...]
) -> tuple[int, int, int, int] | None:
    """Draw one object; return its tight box on the canvas, or None if it came out empty."""
    cx, cy, rx, ry = box_hint
    tilt = math.radians(rng.uniform(-1, 1) * MAX_TILT_DEG.get(name, 20.0))
    outer, hole = SHAPES[name]
    mask = Image.new("L", canvas.size, 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon(_outline(outer, cx, cy, rx, ry, tilt), fill=255)
    if hole is not None:
        draw.polygon(_outline(hole, cx, cy, rx, ry, tilt), fill=0)
    bbox = mask.getbbox()
    if bbox is None:
        return None
    x0, y0, x1, y1 = bbox
    w, h = x1 - x0, y1 - y0
    colour = rng.uniform(0, 255, size=3)
    shade = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(1.0, 1.3), h, dtype=np.float32)
    fill = colour[None, None, :] * shade[:, None, None] + rng.normal(0, 6, size=(h, w, 3))
    patch = Image.fromarray(np.clip(fill, 0, 255).astype(np.uint8))
    canvas.paste(patch, (x0, y0), mask.crop(bbox))
    if rng.random() < 0.5:  # a darker rim on half of the objects
        edge = tuple(int(c * 0.5) for c in colour)
        rim = ImageDraw.Draw(canvas)
        rim.polygon(_outline(outer, cx, cy, rx, ry, tilt), outline=edge, width=SUPERSAMPLE)
    return bbox


def _place(
    rng: np.random.Generator, width: int, height: int, boxes: list[np.ndarray]
) -> tuple[float, float, float, float] | None:
    """Centre and radii (canvas pixels) of a new object that does not hide an earlier one."""
    short = min(width, height)
    for _ in range(20):
        size = short * rng.uniform(0.10, 0.42)
        aspect = math.exp(rng.uniform(-0.45, 0.45))
        rx, ry = size * aspect / 2, size / aspect / 2
        margin = 1.5 * max(rx, ry)  # room for the tilt
        if 2 * margin >= min(width, height):
            continue
        cx = rng.uniform(margin, width - margin)
        cy = rng.uniform(margin, height - margin)
        approx = np.array([cx - rx, cy - ry, cx + rx, cy + ry])
        if not any(_overlaps(approx, b) for b in boxes):
            return cx, cy, rx, ry
    return None


def generate_image(seed: int, split: int, index: int, num_classes: int, key: str) -> GeneratedImage:
    """One image with 1-8 objects of `num_classes` shape classes, as JPEG and a Sample."""
    rng = np.random.default_rng([seed, split, index])
    width, height = int(rng.integers(256, 417)), int(rng.integers(224, 353))
    canvas = _background(rng, width * SUPERSAMPLE, height * SUPERSAMPLE)
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        hint = _place(rng, *canvas.size, boxes)
        if hint is None:
            continue
        label = int(rng.integers(0, num_classes))
        bbox = _paint(rng, canvas, CLASS_NAMES[label], hint)
        if bbox is not None:
            boxes.append(np.array(bbox, dtype=np.float64))
            labels.append(label)
    image = canvas.resize((width, height), Image.Resampling.LANCZOS).filter(ImageFilter.SMOOTH)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    pixel_boxes = np.array(
        [
            [
                math.floor(b[0] / SUPERSAMPLE),
                math.floor(b[1] / SUPERSAMPLE),
                min(width, math.ceil(b[2] / SUPERSAMPLE)),
                min(height, math.ceil(b[3] / SUPERSAMPLE)),
            ]
            for b in boxes
        ],
        dtype=np.float32,
    ).reshape(-1, 4)
    sample = Sample(key, f"{key}.jpg", width, height, pixel_boxes, np.array(labels, np.int64))
    return GeneratedImage(sample, buf.getvalue())


def generate_split(
    seed: int, split: int, count: int, num_classes: int, prefix: str, *, workers: int | None = None
) -> Iterator[GeneratedImage]:
    """`count` images of one split, keys `<prefix>_00000`, ..., in order.

    Each image has its own generator, so they are drawn in `workers` processes (default:
    one per CPU, for splits of 64 images or more) with the same bytes as one process draws.
    """
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
    draw = functools.partial(_generate_indexed, seed, split, num_classes, prefix)
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)), 8) if count >= PARALLEL_FROM else 1
    if workers <= 1:
        yield from map(draw, range(count))
        return
    context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(draw, range(count), chunksize=8)


def _generate_indexed(
    seed: int, split: int, num_classes: int, prefix: str, index: int
) -> GeneratedImage:
    return generate_image(seed, split, index, num_classes, f"{prefix}_{index:05d}")
