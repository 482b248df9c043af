"""From network outputs to detections: softmax, per-class top-k, NMS, keep the best.

GluonCV's SSD defaults: score threshold 0.01, 400 candidates per class before NMS, at most
100 detections per image after it; NMS is per class at `nms_threshold`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.ops import batched_nms

from sdod.model.boxes import decode


@dataclass(frozen=True)
class ImageDetections:
    """One image: `boxes [N, 4]` xyxy in input pixels, `scores [N]`, `labels [N]` (0-based)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def postprocess(
    cls_logits: torch.Tensor,
    box_offsets: torch.Tensor,
    anchors: torch.Tensor,
    *,
    nms_threshold: float = 0.45,
    score_threshold: float = 0.01,
    pre_nms_top_k: int = 400,
    max_detections: int = 100,
) -> list[ImageDetections]:
    """Per-image detections for a batch of network outputs."""
    scores = torch.softmax(cls_logits.float(), dim=-1)[..., 1:]  # [B, A, K]
    boxes = decode(box_offsets.float(), anchors)  # [B, A, 4]
    out = []
    num_classes = scores.shape[-1]
    for b in range(scores.shape[0]):
        s = scores[b]
        top = min(pre_nms_top_k, s.shape[0])
        cand_scores, cand_anchor = s.topk(top, dim=0)  # [top, K] per class
        labels = torch.arange(num_classes, device=s.device).expand(top, num_classes)
        keep = cand_scores > score_threshold
        sc, an, lb = cand_scores[keep], cand_anchor[keep], labels[keep]
        bx = boxes[b][an]
        kept = batched_nms(bx, sc, lb, nms_threshold)[:max_detections]
        out.append(ImageDetections(bx[kept], sc[kept], lb[kept]))
    return out


def own_inference(model: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The model's own `resize` when it brings its own inference (`resize` and `detect`:
    SageMaker's networks, sdod/model/sagemaker_model.py); None for sdod's own networks."""
    resize, decode = getattr(model, "resize", None), getattr(model, "detect", None)
    return resize if callable(resize) and callable(decode) else None


def detections(
    model: Any,
    cls_logits: torch.Tensor,
    box_offsets: torch.Tensor,
    *,
    nms_threshold: float,
    nms_topk: int,
) -> list[ImageDetections]:
    """Per-image detections as the model's endpoint decodes them: its own `detect` when it
    brings one (which applies its own thresholds), else `postprocess` at `nms_threshold`,
    keeping at most `nms_topk` per image."""
    if own_inference(model) is not None:
        found: list[ImageDetections] = model.detect(cls_logits, box_offsets)
        return found
    return postprocess(
        cls_logits, box_offsets, model.anchors, nms_threshold=nms_threshold,
        max_detections=nms_topk,
    )  # fmt: skip
