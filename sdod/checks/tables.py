"""Samples as tables for the expectation suite: one row per image, one row per box.

Image facts (does it decode, its real size and mode) come from parallel workers; boxes are
built with numpy, without Python loops over boxes.
"""

from __future__ import annotations

import io
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from sdod.checks.quarantine import quarantine_key
from sdod.data.images import read_image_bytes
from sdod.data.sample import Sample

NORMALIZED_LIMIT = 1.5  # every coordinate below this on a larger image: 0..1, not pixels


@dataclass(frozen=True)
class ImageFacts:
    decodes: bool
    width: int
    height: int
    mode: str
    error: str


def image_facts(uri: str) -> ImageFacts:
    """Fully decode one image (a truncated file fails here, not half-way through training)."""
    try:
        with Image.open(io.BytesIO(read_image_bytes(uri))) as im:
            im.load()
            return ImageFacts(True, im.size[0], im.size[1], im.mode, "")
    except Exception as exc:
        return ImageFacts(False, 0, 0, "", f"{type(exc).__name__}: {exc}")


def decode_all(uris: list[str], workers: int) -> list[ImageFacts]:
    if workers <= 1 or len(uris) < 64:
        return [image_facts(u) for u in uris]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(image_facts, uris, chunksize=64))


def image_table(
    channel: str, samples: list[Sample], facts: list[ImageFacts] | None
) -> pd.DataFrame:
    n = len(samples)
    frame = pd.DataFrame(
        {
            "channel": [channel] * n,
            "key": [quarantine_key(channel, s.key) for s in samples],
            "file": [s.image for s in samples],
            "declared_width": [s.width for s in samples],
            "declared_height": [s.height for s in samples],
            "n_objects": [s.num_objects for s in samples],
        }
    )
    top = [float(s.boxes.max()) if s.num_objects else np.inf for s in samples]
    frame["looks_normalized"] = (np.array(top) <= NORMALIZED_LIMIT) & (
        np.minimum(frame["declared_width"], frame["declared_height"]) > 10
    )
    if facts is not None:
        frame["decodes"] = [f.decodes for f in facts]
        frame["decoded_width"] = [
            f.width if f.decodes else s.width for f, s in zip(facts, samples, strict=True)
        ]
        frame["decoded_height"] = [
            f.height if f.decodes else s.height for f, s in zip(facts, samples, strict=True)
        ]
        frame["mode"] = [f.mode if f.decodes else "RGB" for f in facts]
        frame["decode_error"] = [f.error for f in facts]
    return frame


def box_table(channel: str, samples: list[Sample]) -> pd.DataFrame:
    counts = np.array([s.num_objects for s in samples], dtype=np.int64)
    boxes = np.concatenate([s.boxes for s in samples] or [np.zeros((0, 4), np.float32)]).astype(
        np.float64
    )
    labels = np.concatenate([s.labels for s in samples] or [np.zeros(0, np.int64)])
    widths = np.repeat([s.width for s in samples], counts).astype(np.float64)
    heights = np.repeat([s.height for s in samples], counts).astype(np.float64)
    # how far the box reaches outside the image, in pixels (<= 0 when inside)
    edges = np.stack([-boxes[:, 0], -boxes[:, 1], boxes[:, 2] - widths, boxes[:, 3] - heights])
    overflow = edges.max(axis=0) if len(boxes) else np.zeros(0)
    return pd.DataFrame(
        {
            "channel": channel,
            "key": np.repeat([quarantine_key(channel, s.key) for s in samples], counts),
            "file": np.repeat([s.image for s in samples], counts),
            "class_id": labels,
            "box_width": boxes[:, 2] - boxes[:, 0],
            "box_height": boxes[:, 3] - boxes[:, 1],
            "overflow": overflow,
            "finite": np.isfinite(boxes).all(axis=1),
        }
    )
