"""SSD training augmentation as plain tensor functions, fast enough to feed a GPU.

The SSD paper's recipe (as GluonCV's `SSDDefaultTrainTransform` applies it): zoom-out onto
a mean-filled canvas up to 4× (p 0.5), an IoU-constrained random crop (min IoU drawn from
{none, 0.1, 0.3, 0.5, 0.7, 0.9}, scale 0.3-1, aspect 0.5-2, boxes kept by their centres),
horizontal flip, resize, then colour distortion in GluonCV's form (brightness, contrast,
saturation, and hue as a rotation in YIQ space, each with p 0.5).

torchvision's v2 transforms do the same things but cost ~22 ms per image on one core
(`RandomIoUCrop` tries candidates one by one in Python; hue goes through HSV): here the crop
candidates are drawn and scored in one batch and the colour is one 3×3 matrix, ~4× faster
(`bench/data_loader.py`). Randomness comes from torch's generator, which the DataLoader
seeds per worker.
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as F
from torchvision.ops import box_iou

MEAN_PIXEL = (124, 116, 104)  # ImageNet mean in 0..255: the zoom-out fill
MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9)  # None: keep the whole image
CROP_TRIALS = 40
OPTION_TRIES = 10
# RGB -> YIQ and back (GluonCV's hue jitter rotates I and Q)
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
_RGB = torch.linalg.inv(_YIQ)

Boxes = torch.Tensor  # float [N, 4] xmin, ymin, xmax, ymax in pixels


def _rand(lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def zoom_out(
    image: torch.Tensor, boxes: Boxes, max_scale: float = 4.0
) -> tuple[torch.Tensor, Boxes]:
    """Place the image at a random spot of a mean-filled canvas up to `max_scale` × larger."""
    _, h, w = image.shape
    ratio = _rand(1.0, max_scale)
    ch, cw = int(h * ratio), int(w * ratio)
    top, left = int(_rand(0, ch - h)), int(_rand(0, cw - w))
    canvas = torch.tensor(MEAN_PIXEL, dtype=image.dtype).view(3, 1, 1).expand(3, ch, cw).clone()
    canvas[:, top : top + h, left : left + w] = image
    return canvas, boxes + torch.tensor([left, top, left, top], dtype=boxes.dtype)


def iou_crop(
    image: torch.Tensor, boxes: Boxes, labels: torch.Tensor, *, min_scale: float = 0.3
) -> tuple[torch.Tensor, Boxes, torch.Tensor]:
    """The SSD crop: a min IoU is drawn, then the first of `CROP_TRIALS` candidates (all
    scored at once) whose IoU with some box reaches it and that holds a box centre."""
    _, h, w = image.shape
    if boxes.numel() == 0:
        return image, boxes, labels
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for _ in range(OPTION_TRIES):
        min_iou = MIN_IOUS[int(torch.randint(len(MIN_IOUS), ()))]
        if min_iou is None:
            return image, boxes, labels
        scale = min_scale + (1 - min_scale) * torch.rand(CROP_TRIALS, 2)
        cw, ch = (scale[:, 0] * w).floor(), (scale[:, 1] * h).floor()
        aspect = cw / ch.clamp(min=1)
        left = ((w - cw) * torch.rand(CROP_TRIALS)).floor()
        top = ((h - ch) * torch.rand(CROP_TRIALS)).floor()
        crops = torch.stack([left, top, left + cw, top + ch], dim=1)
        inside = (
            (centres[None, :, 0] > crops[:, None, 0])
            & (centres[None, :, 0] < crops[:, None, 2])
            & (centres[None, :, 1] > crops[:, None, 1])
            & (centres[None, :, 1] < crops[:, None, 3])
        )
        ok = (aspect >= 0.5) & (aspect <= 2) & (cw >= 1) & (ch >= 1) & inside.any(dim=1)
        ok &= box_iou(crops, boxes.float()).max(dim=1).values >= min_iou
        hits = ok.nonzero()
        if hits.numel() == 0:
            continue
        i = int(hits[0])
        x0, y0, x1, y1 = (int(v) for v in crops[i])
        keep = inside[i]
        shifted = boxes[keep] - torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)
        shifted[:, 0::2] = shifted[:, 0::2].clamp(0, x1 - x0)
        shifted[:, 1::2] = shifted[:, 1::2].clamp(0, y1 - y0)
        return image[:, y0:y1, x0:x1], shifted, labels[keep]
    return image, boxes, labels


def hflip(image: torch.Tensor, boxes: Boxes) -> tuple[torch.Tensor, Boxes]:
    w = image.shape[2]
    flipped = boxes.clone()
    flipped[:, 0], flipped[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return image.flip(2), flipped


def vflip(image: torch.Tensor, boxes: Boxes) -> tuple[torch.Tensor, Boxes]:
    h = image.shape[1]
    flipped = boxes.clone()
    flipped[:, 1], flipped[:, 3] = h - boxes[:, 3], h - boxes[:, 1]
    return image.flip(1), flipped


def rot90(image: torch.Tensor, boxes: Boxes, turns: int) -> tuple[torch.Tensor, Boxes]:
    """`turns` quarter turns counter-clockwise: a pixel at (x, y) of a W-wide image goes to
    (y, W - x)."""
    for _ in range(turns % 4):
        w = image.shape[2]
        image = torch.rot90(image, 1, dims=(1, 2))
        boxes = torch.stack([boxes[:, 1], w - boxes[:, 2], boxes[:, 3], w - boxes[:, 0]], dim=1)
    return image, boxes


def resize(image: torch.Tensor, boxes: Boxes, size: int) -> tuple[torch.Tensor, Boxes]:
    _, h, w = image.shape
    out = F.resize(image, [size, size], antialias=True)
    scale = torch.tensor([size / w, size / h, size / w, size / h], dtype=boxes.dtype)
    return out, boxes * scale


def color_distort(image: torch.Tensor) -> torch.Tensor:
    """GluonCV's colour jitter, each part with p 0.5: brightness ±32, contrast and
    saturation ×0.5-1.5, hue ±18° (a rotation of the I/Q plane); uint8 in and out."""
    x = image.float()
    if _rand() < 0.5:
        x = x + _rand(-32, 32)
    if _rand() < 0.5:
        gray = (x * _YIQ[0].view(3, 1, 1)).sum(0).mean()
        x = gray + (x - gray) * _rand(0.5, 1.5)
    if _rand() < 0.5:
        gray = (x * _YIQ[0].view(3, 1, 1)).sum(0, keepdim=True)
        x = gray + (x - gray) * _rand(0.5, 1.5)
    if _rand() < 0.5:
        a = math.radians(_rand(-18, 18))
        rot = torch.tensor(
            [[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]]
        )
        m = _RGB @ rot @ _YIQ
        x = torch.einsum("ij,jhw->ihw", m, x)
    return x.clamp_(0, 255).round_().to(torch.uint8)


def augment(
    image: torch.Tensor, boxes: Boxes, labels: torch.Tensor, *, size: int, policy: str
) -> tuple[torch.Tensor, Boxes, torch.Tensor]:
    """Augment a uint8 `[3, H, W]` image and its pixel boxes for training, then resize to
    `size`. `ssd`: zoom-out, crop, flip, colour. `light`: a mild crop (scale ≥ 0.5) half
    the time, flip, colour. `aerial`: `light` plus a vertical flip and 0-3 quarter turns
    (a view from above has no "up"). `none`: resize only. Boxes under 1 px are dropped."""
    boxes = boxes.float()
    if policy == "ssd":
        if _rand() < 0.5:
            image, boxes = zoom_out(image, boxes)
        image, boxes, labels = iou_crop(image, boxes, labels)
    elif policy in ("light", "aerial") and _rand() < 0.5:
        image, boxes, labels = iou_crop(image, boxes, labels, min_scale=0.5)
    if policy != "none" and _rand() < 0.5:
        image, boxes = hflip(image, boxes)
    if policy == "aerial":
        if _rand() < 0.5:
            image, boxes = vflip(image, boxes)
        image, boxes = rot90(image, boxes, int(_rand(0, 4)))
    image, boxes = resize(image, boxes, size)
    if policy != "none":
        image = color_distort(image)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    return image.contiguous(), boxes[keep], labels[keep]
