"""Box coding and anchor matching (GluonCV's SSD target generator, vectorised).

Conventions: anchors `(cx, cy, w, h)`, boxes `[x1, y1, x2, y2]`, both in input pixels.
Offsets are normalised by `STDS = (0.1, 0.1, 0.2, 0.2)` as in GluonCV's
`NormalizedBoxCenterEncoder`.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

STDS = (0.1, 0.1, 0.2, 0.2)
BBOX_CLIP = 4.135166556742356  # log(1000 / 16): no exp overflow when decoding


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    half = b[..., 2:] / 2
    return torch.cat([b[..., :2] - half, b[..., :2] + half], dim=-1)


def encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """`[A, 4]` matched boxes (xyxy) -> `[A, 4]` normalised offsets against `anchors`."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    stds = anchors.new_tensor(STDS)
    t_xy = (centre - anchors[:, :2]) / anchors[:, 2:] / stds[:2]
    t_wh = torch.log(wh / anchors[:, 2:]) / stds[2:]
    return torch.cat([t_xy, t_wh], dim=1)


def decode(offsets: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """`[..., A, 4]` offsets -> xyxy boxes in input pixels."""
    stds = offsets.new_tensor(STDS)
    xy = offsets[..., :2] * stds[:2] * anchors[:, 2:] + anchors[:, :2]
    wh = torch.exp((offsets[..., 2:] * stds[2:]).clamp(max=BBOX_CLIP)) * anchors[:, 2:]
    return torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)


def match(
    boxes: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor, *, iou_threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classification targets `[A]` (0 background, class + 1) and box targets `[A, 4]`.

    An anchor takes the ground-truth box it overlaps most when IoU >= `iou_threshold`;
    every ground-truth box also takes its single best anchor, whatever the IoU (so small
    objects are never left without a positive).
    """
    num_anchors = anchors.shape[0]
    cls_t = torch.zeros(num_anchors, dtype=torch.int64)
    box_t = torch.zeros(num_anchors, 4)
    if boxes.numel() == 0:
        return cls_t, box_t
    iou = box_iou(boxes, cxcywh_to_xyxy(anchors))  # [G, A]
    best_iou, best_gt = iou.max(dim=0)
    best_gt[best_iou < iou_threshold] = -1
    best_gt[iou.argmax(dim=1)] = torch.arange(len(boxes))
    pos = best_gt >= 0
    cls_t[pos] = labels[best_gt[pos]] + 1
    box_t[pos] = encode(boxes[best_gt[pos]], anchors[pos])
    return cls_t, box_t
