"""Sliced inference for large images: the image is cut into overlapping tiles
(`sdod.data.tiles.windows`), each tile goes through the model at its `image_shape` (as a
batch), and the tiles' detections are put back into the whole image and merged.

Merging, per class:
1. a detection cut by a tile border that is inside the image (it touches that border) and
   no longer, across it, than the overlap is dropped: the neighbouring tile holds the
   object whole;
2. pieces are joined: a detection cut by a border and one it meets that covers the same
   extent across the cut (1-D IoU at least 0.7: two views of one object larger than the
   overlap) become their union, with the higher score, until nothing more joins;
3. duplicates are suppressed: NMS at the model's `nms_threshold` (an object inside the
   overlap, seen whole by two tiles, once).
So an object no larger than the overlap comes back once, whole; one larger than the
overlap comes back as the union of its pieces (not SAHI's greedy merging by intersection
over the smaller box, which also fuses neighbours that merely overlap). `whole=True` adds
the whole image, resized to `image_shape`, as one more tile (for objects larger than a
tile).

Answers are SageMaker's rows `[class, score, xmin, ymin, xmax, ymax]`, normalised to the
whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision.ops import batched_nms

from sdod.data.tiles import Window, check_tiling, windows

EDGE_PX = 1.5  # a box within this many tile pixels of a border touches it
PIECE_ALIGN = 0.7  # pieces of one object cover the same extent across the cut (1-D IoU)


@dataclass(frozen=True)
class Slicing:
    size: int  # tile side, pixels of the image
    overlap: int  # pixels neighbouring tiles share
    whole: bool = False  # also run the whole image as one tile

    def __post_init__(self) -> None:
        check_tiling(self.size, self.overlap)


def tiles(image: torch.Tensor, slicing: Slicing) -> tuple[list[Window], list[torch.Tensor]]:
    """The windows of a uint8 `[3, H, W]` image and its crops (plus the whole image)."""
    height, width = image.shape[-2:]
    found = windows(width, height, slicing.size, slicing.overlap)
    crops = [image[:, w.y0 : w.y1, w.x0 : w.x1] for w in found]
    if slicing.whole and len(found) > 1:
        found.append(Window(0, 0, width, height))
        crops.append(image)
    return found, crops


@dataclass
class _Box:
    label: int
    score: float
    box: list[float]  # xyxy, image pixels
    cut: tuple[bool, bool]  # cut by an inner border across x, across y
    window: int = 0  # the tile it came from


def _placed(
    rows: list[list[float]], window: Window, index: int, width: int, height: int, overlap: int
) -> list[_Box]:
    """A tile's rows (normalised to the tile) as boxes in image pixels; drop rule 1."""
    out = []
    edge_x, edge_y = EDGE_PX / window.width, EDGE_PX / window.height
    for label, score, x0, y0, x1, y1 in rows:
        box = [window.x0 + x0 * window.width, window.y0 + y0 * window.height,
               window.x0 + x1 * window.width, window.y0 + y1 * window.height]  # fmt: skip
        cut_x = (x0 <= edge_x and window.x0 > 0) or (x1 >= 1 - edge_x and window.x1 < width)
        cut_y = (y0 <= edge_y and window.y0 > 0) or (y1 >= 1 - edge_y and window.y1 < height)
        if (cut_x and box[2] - box[0] <= overlap) or (cut_y and box[3] - box[1] <= overlap):
            continue  # the neighbour holds it whole
        out.append(_Box(int(label), score, box, (cut_x, cut_y), index))
    return out


def _extent_iou(
    a0: torch.Tensor, a1: torch.Tensor, b0: torch.Tensor, b1: torch.Tensor
) -> torch.Tensor:
    inter = (torch.minimum(a1, b1) - torch.maximum(a0, b0)).clamp(min=0)
    return inter / (torch.maximum(a1, b1) - torch.minimum(a0, b0)).clamp(min=1e-9)


def _join_pieces(
    xyxy: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    cut: torch.Tensor,
    window: torch.Tensor,
) -> torch.Tensor:
    """Rule 2 in place: each cut box absorbs the boxes of its class that it meets and that
    cover the same extent across the cut; returns which boxes are left."""
    alive = torch.ones(len(xyxy), dtype=torch.bool)
    changed = True
    while changed:
        changed = False
        for i in torch.nonzero(cut.any(dim=1)).flatten().tolist():
            if not alive[i]:
                continue
            box = xyxy[i]
            meet = (torch.minimum(xyxy[:, 2], box[2]) > torch.maximum(xyxy[:, 0], box[0])) & (
                torch.minimum(xyxy[:, 3], box[3]) > torch.maximum(xyxy[:, 1], box[1])
            )
            same_y = _extent_iou(xyxy[:, 1], xyxy[:, 3], box[1], box[3]) >= PIECE_ALIGN
            same_x = _extent_iou(xyxy[:, 0], xyxy[:, 2], box[0], box[2]) >= PIECE_ALIGN
            # both cut across the same axis, and from other tiles: an uncut neighbour, or a
            # box of the same tile, is another object
            across_x, across_y = cut[:, 0] & cut[i, 0], cut[:, 1] & cut[i, 1]
            pieces = alive & (labels == labels[i]) & meet & (window != window[i])
            pieces &= (across_x & same_y) | (across_y & same_x)
            pieces[i] = False
            if pieces.any():
                group = torch.cat([box[None], xyxy[pieces]])
                xyxy[i] = torch.cat(
                    [group[:, :2].min(dim=0).values, group[:, 2:].max(dim=0).values]
                )
                scores[i] = torch.max(scores[i], scores[pieces].max())
                cut[i] |= cut[pieces].any(dim=0)
                window[i] = -1 - i  # the union is of several tiles
                alive &= ~pieces
                changed = True
    return alive


def merge_boxes(boxes: list[_Box], nms_threshold: float) -> list[_Box]:
    """Rules 2 and 3: pieces joined, then duplicates suppressed (per class)."""
    if not boxes:
        return []
    xyxy = torch.tensor([b.box for b in boxes], dtype=torch.float64)
    scores = torch.tensor([b.score for b in boxes], dtype=torch.float64)
    labels = torch.tensor([b.label for b in boxes])
    cut = torch.tensor([b.cut for b in boxes], dtype=torch.bool)
    window = torch.tensor([b.window for b in boxes])
    alive = _join_pieces(xyxy, scores, labels, cut, window)
    xyxy, scores, labels, cut = xyxy[alive], scores[alive], labels[alive], cut[alive]
    keep = batched_nms(xyxy, scores, labels, nms_threshold)
    return [
        _Box(int(labels[k]), float(scores[k]), xyxy[k].tolist(), tuple(cut[k].tolist()))
        for k in keep.tolist()
    ]


def merge(
    answers: list[dict[str, Any]],
    found: list[Window],
    size: tuple[int, int],
    slicing: Slicing,
    *,
    nms_threshold: float,
    score_threshold: float = 0.0,
    top_k: int | None = None,
) -> dict[str, Any]:
    """The whole image's SageMaker response from its tiles' responses (`size`: W, H)."""
    width, height = size
    boxes = [
        box
        for index, (answer, window) in enumerate(zip(answers, found, strict=True))
        for box in _placed(answer["prediction"], window, index, width, height, slicing.overlap)
        if box.score >= score_threshold
    ]
    kept = sorted(merge_boxes(boxes, nms_threshold), key=lambda b: -b.score)[:top_k]
    scale = (width, height, width, height)
    return {
        "prediction": [
            [float(b.label), float(b.score)]
            + [min(1.0, max(0.0, v / s)) for v, s in zip(b.box, scale, strict=True)]
            for b in kept
        ]
    }
