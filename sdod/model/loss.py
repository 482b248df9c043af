"""SSD multibox loss: softmax cross-entropy with 3:1 hard-negative mining + smooth L1.

Fully batched: no per-image Python loop. Targets come from `boxes.match`, computed in the
data workers. Both terms are normalised by the number of positive anchors in the batch
(GluonCV's `SSDMultiBoxLoss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEGATIVE_RATIO = 3


def multibox_loss(
    cls_logits: torch.Tensor,
    box_offsets: torch.Tensor,
    cls_targets: torch.Tensor,
    box_targets: torch.Tensor,
    *,
    negative_ratio: int = NEGATIVE_RATIO,
    normaliser: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(cross_entropy, smooth_l1)` for logits `[B, A, K+1]`, offsets `[B, A, 4]`,
    class targets `[B, A]` (0 background) and box targets `[B, A, 4]`.

    `normaliser` replaces this batch's positive-anchor count (distributed training passes
    the global count over the number of processes, so averaged gradients equal one
    process's on the whole global batch)."""
    if cls_logits.shape[:2] != cls_targets.shape or box_offsets.shape != box_targets.shape:
        shapes = ", ".join(
            f"{name} {tuple(t.shape)}"
            for name, t in (
                ("logits", cls_logits),
                ("offsets", box_offsets),
                ("class targets", cls_targets),
                ("box targets", box_targets),
            )
        )
        raise ValueError(f"shape mismatch: {shapes}")
    ce = F.cross_entropy(cls_logits.float().flatten(0, 1), cls_targets.flatten(), reduction="none")
    ce = ce.view_as(cls_targets)
    pos = cls_targets > 0
    num_pos = pos.sum(dim=1, keepdim=True)
    # Hard negatives: background anchors ranked by their loss, 3 per positive per image.
    neg_loss = ce.detach().masked_fill(pos, float("-inf"))
    rank = neg_loss.argsort(dim=1, descending=True).argsort(dim=1)
    neg = rank < negative_ratio * num_pos
    if normaliser is None:
        normaliser = num_pos.sum().clamp(min=1).float()
    cls_loss = (ce * (pos | neg)).sum() / normaliser
    # positives picked by a mask, not by indexing: `x[pos]` makes the host wait for the GPU
    # to count them, at every training step
    box_loss = F.smooth_l1_loss(box_offsets.float(), box_targets, reduction="none", beta=1.0)
    box_loss = torch.where(pos.unsqueeze(-1), box_loss, 0.0).sum()
    return cls_loss, box_loss / normaliser
