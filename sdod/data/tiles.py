"""Tiles of a large image: the windows a tile size and an overlap cut it into, shared by
tiling for training (`sdod tile`) and sliced inference (`sdod.serve.slicing`).

Windows are `size` × `size` pixels (smaller only where the image is), stepping by
`size - overlap` from the top-left corner, the last row and column flush with the image's
right and bottom edges, so every pixel is in a window and neighbours share at least
`overlap` pixels. An object no wider and taller than `overlap` lies whole in at least one
window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sdod.errors import UserError

MAX_TILES = 10_000  # windows of one image


@dataclass(frozen=True)
class Window:
    """A tile's place in its image, in pixels: `[x0, x1) × [y0, y1)`."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def check_tiling(size: int, overlap: int) -> None:
    if not 32 <= size <= 8192:
        raise UserError(f"tile size must be 32 to 8192 pixels, got {size}")
    if not 0 <= overlap < size:
        raise UserError(
            f"tile overlap must be 0 to {size - 1} pixels (below the size), got {overlap}"
        )


def _starts(length: int, size: int, step: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, step))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def windows(width: int, height: int, size: int, overlap: int) -> list[Window]:
    """The windows of a `width` × `height` image, row by row."""
    check_tiling(size, overlap)
    step = size - overlap
    xs, ys = _starts(width, size, step), _starts(height, size, step)
    if len(xs) * len(ys) > MAX_TILES:
        raise UserError(
            f"a {width} x {height} image makes {len(xs) * len(ys)} tiles of {size} pixels "
            f"(at most {MAX_TILES}); use larger tiles or less overlap"
        )
    return [Window(x, y, min(x + size, width), min(y + size, height)) for y in ys for x in xs]


# --- boxes on windows: `[N, 4]` absolute pixel `xmin, ymin, xmax, ymax` ------------------


def clip_to_image(boxes: npt.ArrayLike, width: int, height: int) -> npt.NDArray[np.float64]:
    """`[N, 4]` boxes clipped to a `width` x `height` image (float64)."""
    limits = np.array([width, height, width, height], np.float64)
    return np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0, limits)


def box_area(boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """`[...]` areas of `[..., 4]` boxes; an empty or inverted box has area 0."""
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(
        boxes[..., 3] - boxes[..., 1], 0, None
    )


def visibility(
    boxes: npt.ArrayLike, width: int, height: int, cut: list[Window]
) -> npt.NDArray[np.float64]:
    """`[T, N]`: the share of box n's area inside the image that window t shows (0 for a
    box with no area inside the image)."""
    inside = clip_to_image(boxes, width, height)
    edges = np.array([[w.x0, w.y0, w.x1, w.y1] for w in cut], np.float64).reshape(-1, 1, 4)
    lo = np.maximum(inside[None, :, :2], edges[..., :2])
    hi = np.minimum(inside[None, :, 2:], edges[..., 2:])
    area = box_area(inside)
    return box_area(np.concatenate([lo, hi], axis=-1)) / np.where(area > 0, area, 1.0)


def in_window(boxes: npt.ArrayLike, window: Window) -> npt.NDArray[np.float32]:
    """`[N, 4]` boxes clipped to `window` and moved into its pixels (float32)."""
    w = window
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    low = np.array([w.x0, w.y0, w.x0, w.y0], np.float64)
    high = np.array([w.x1, w.y1, w.x1, w.y1], np.float64)
    return (np.clip(b, low, high) - low).astype(np.float32)
