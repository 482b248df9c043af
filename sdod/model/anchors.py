"""SSD anchors exactly as GluonCV's `SSDAnchorGenerator` makes them.

Per feature-map cell `(i, j)` (row-major), centre `((j + 0.5) * step, (i + 0.5) * step)`:
two squares `size_min` and `sqrt(size_min * size_max)`, then `size_min` at each further
ratio `r` as `w = s * sqrt(r)`, `h = s / sqrt(r)`. Output: `[A, 4]` float32
`(cx, cy, w, h)` in input pixels, layers concatenated, not clipped.

Presets carry GluonCV's numbers (`ssd_300_vgg16_atrous`, `ssd_512_vgg16_atrous`,
`ssd_512_resnet50_v1`); other image sizes scale the nearest preset's sizes, and steps are
`image_size / feature_size`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

R3 = (1.0, 2.0, 0.5)
R5 = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)


@dataclass(frozen=True)
class AnchorPreset:
    image_size: int
    sizes: tuple[float, ...]  # one more than the number of feature maps
    ratios: tuple[tuple[float, ...], ...]
    steps: tuple[float, ...] | None  # None: image_size / feature size

    def num_anchors(self) -> list[int]:
        """Anchors per cell, per feature map."""
        return [1 + len(r) for r in self.ratios]


VGG16_300 = AnchorPreset(
    300, (30, 60, 111, 162, 213, 264, 315), (R3, R5, R5, R5, R3, R3), (8, 16, 32, 64, 100, 300)
)
VGG16_512 = AnchorPreset(
    512,
    (51.2, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
    (R3, R5, R5, R5, R5, R3, R3),
    (8, 16, 32, 64, 128, 256, 512),
)
RESNET50_512 = AnchorPreset(
    512,
    (51.2, 102.4, 189.4, 276.4, 363.52, 450.6, 492),
    (R3, R5, R5, R5, R3, R3),
    (16, 32, 64, 128, 256, 512),
)
RESNET50_300 = AnchorPreset(
    300, VGG16_300.sizes, RESNET50_512.ratios, None
)  # sdod: GluonCV has none
# sdod: resnet-lite's maps start at stride 8 (38x38), with anchors from 21 pixels: smaller
# objects than ResNet-50's stride-16 first map with 30-pixel anchors can match (docs/quality.md)
RESNET_LITE_300 = AnchorPreset(300, (21, 45, 90, 150, 210, 270, 315), VGG16_300.ratios, None)
PRESETS = {
    ("vgg-16", 300): VGG16_300,
    ("vgg-16", 512): VGG16_512,
    ("resnet-50", 300): RESNET50_300,
    ("resnet-50", 512): RESNET50_512,
    ("resnet-lite", 300): RESNET_LITE_300,
}


def preset_for(base_network: str, image_size: int) -> AnchorPreset:
    """The preset for a network and size; other sizes scale the nearest preset."""
    if (base_network, image_size) in PRESETS:
        return PRESETS[(base_network, image_size)]
    candidates = [p for (net, _), p in PRESETS.items() if net == base_network] or [VGG16_300]
    if base_network not in {net for net, _ in PRESETS}:
        candidates = [RESNET50_300]  # mobilenet-v3 shares ResNet-50's six-map layout
    nearest = min(candidates, key=lambda p: abs(p.image_size - image_size))
    scale = image_size / nearest.image_size
    return AnchorPreset(image_size, tuple(s * scale for s in nearest.sizes), nearest.ratios, None)


def generate_anchors(
    preset: AnchorPreset, feature_sizes: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """`[A, 4]` float32 `(cx, cy, w, h)` pixels for feature maps of `(height, width)`."""
    if len(feature_sizes) != len(preset.ratios):
        raise ValueError(
            f"{len(feature_sizes)} feature maps but the anchor preset has "
            f"{len(preset.ratios)} layers"
        )
    layers = []
    for k, ((fh, fw), ratios) in enumerate(zip(feature_sizes, preset.ratios, strict=True)):
        step = preset.steps[k] if preset.steps else preset.image_size / fh
        s_min, s_max = preset.sizes[k], preset.sizes[k + 1]
        shapes = [(s_min, s_min), (math.sqrt(s_min * s_max),) * 2]
        shapes += [(s_min * math.sqrt(r), s_min / math.sqrt(r)) for r in ratios[1:]]
        wh = np.array(shapes, dtype=np.float64)  # [K, 2]
        cy, cx = np.meshgrid(
            (np.arange(fh) + 0.5) * step, (np.arange(fw) + 0.5) * step, indexing="ij"
        )
        centres = np.stack([cx, cy], axis=-1).reshape(-1, 1, 2)  # [fh*fw, 1, 2]
        cell = np.concatenate(
            [
                np.broadcast_to(centres, (fh * fw, len(wh), 2)),
                np.broadcast_to(wh, (fh * fw, len(wh), 2)),
            ],
            axis=-1,
        )
        layers.append(cell.reshape(-1, 4))
    return torch.from_numpy(np.concatenate(layers).astype(np.float32))
