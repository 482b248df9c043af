"""example/ssd's preprocessing: OpenCV's `cv2.resize(..., INTER_LINEAR)` on uint8, exactly.

OpenCV resizes 8-bit images in fixed point (`INTER_RESIZE_COEF_BITS` = 11), so a float
bilinear resize differs from it by a grey level on about one value in ten. This is the
same arithmetic, vectorised:

- source coordinate `f = float((d + 0.5) * scale - 0.5)`, `scale = 1 / (dst / src)` in
  double, `s = floor(f)`, `f -= s` in float;
- columns: `s < 0` or `s >= width - 1` clamp to the edge with `f = 0`; rows keep `f` and
  clamp only the row index;
- coefficients `round((1 - f) * 2048)` and `round(f * 2048)` (round half to even);
- horizontal pass `S[s] * a0 + S[s + 1] * a1` (int); vertical pass
  `((b0 * (R0 >> 4)) >> 16) + ((b1 * (R1 >> 4)) >> 16) + 2) >> 2`;
- a downscale by exactly 2 in both directions is OpenCV's INTER_AREA: `(a+b+c+d+2) >> 2`.
"""

from __future__ import annotations

import numpy as np

COEF_BITS = 11
COEF_SCALE = 1 << COEF_BITS


def _coefficients(src: int, dst: int, clamp_weight: bool) -> tuple[np.ndarray, ...]:
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp_weight:  # columns: OpenCV clamps both the index and the weight
        edge = (s < 0) | (s >= src - 1)
        f[edge] = 0.0
        s = np.clip(s, 0, src - 1)
    a0 = np.rint((np.float32(1.0) - f) * np.float32(COEF_SCALE)).astype(np.int64)
    a1 = np.rint(f * np.float32(COEF_SCALE)).astype(np.int64)
    s0 = np.clip(s, 0, src - 1)
    s1 = np.clip(s + 1, 0, src - 1)
    return s0, s1, a0, a1


def resize_linear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)` for a uint8
    `[H, W, C]` image."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected a uint8 [H, W, C] image, got {image.dtype} {image.shape}")
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.copy()
    if src_w == 2 * width and src_h == 2 * height:  # OpenCV takes INTER_AREA here
        four = image.reshape(height, 2, width, 2, -1).astype(np.int64).sum(axis=(1, 3))
        return ((four + 2) >> 2).astype(np.uint8)
    x0, x1, a0, a1 = _coefficients(src_w, width, clamp_weight=True)
    y0, y1, b0, b1 = _coefficients(src_h, height, clamp_weight=False)
    pixels = image.astype(np.int64)
    rows = pixels[:, x0] * a0[None, :, None] + pixels[:, x1] * a1[None, :, None]  # [H, w, C]
    top = (b0[:, None, None] * (rows[y0] >> 4)) >> 16
    bottom = (b1[:, None, None] * (rows[y1] >> 4)) >> 16
    return ((top + bottom + 2) >> 2).astype(np.uint8)
