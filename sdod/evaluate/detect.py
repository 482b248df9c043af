"""Run a model over Samples and collect detections and ground truth for the metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from sdod.data.dataset import DetectionDataset
from sdod.data.sample import Sample
from sdod.evaluate.voc import BoxTable
from sdod.faults import pause_point
from sdod.model.postprocess import postprocess
from sdod.model.ssd import SSD


def ground_truth(samples: list[Sample]) -> BoxTable:
    """Flat ground truth in original pixels (difficult flags kept)."""
    counts = [s.num_objects for s in samples]
    boxes: list[np.ndarray] = [s.boxes for s in samples] or [np.zeros((0, 4))]
    labels: list[np.ndarray] = [s.labels for s in samples] or [np.zeros(0)]
    difficult: list[np.ndarray] = [s.difficult for s in samples] or [np.zeros(0)]
    return BoxTable(
        np.repeat(np.arange(len(samples)), counts).astype(np.int64),
        np.concatenate(boxes).astype(np.float64).reshape(-1, 4),
        np.concatenate(labels).astype(np.int64),
        difficult=np.concatenate(difficult).astype(bool),
    )


@torch.no_grad()
def detect(
    model: SSD,
    samples: list[Sample],
    *,
    device: torch.device,
    batch_size: int = 16,
    workers: int = 0,
    nms_threshold: float = 0.45,
    should_stop: Callable[[], bool] = lambda: False,
) -> BoxTable | None:
    """Detections in original image pixels for every sample (a BoxTable); None if
    stopped part-way."""
    size = model.config.image_size
    dataset = DetectionDataset(samples, image_size=size, anchors=model.anchors.cpu(), train=False)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda"
    )
    was_training = model.training
    model.eval()
    images, boxes, labels, scores = [], [], [], []
    try:
        for batch, index in loader:
            pause_point("validation")
            if should_stop():
                return None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                cls, box = model(batch.to(device, non_blocking=True))
            dets = postprocess(cls, box, model.anchors, nms_threshold=nms_threshold)
            for i, det in zip(index.tolist(), dets, strict=True):
                s = samples[i]
                scale = torch.tensor([s.width / size, s.height / size] * 2, device=det.boxes.device)
                boxes.append((det.boxes * scale).cpu().numpy())
                scores.append(det.scores.cpu().numpy())
                labels.append(det.labels.cpu().numpy())
                images.append(np.full(len(det.scores), i))
    finally:
        model.train(was_training)
    return BoxTable(
        np.concatenate(images or [np.zeros(0)]).astype(np.int64),
        np.concatenate(boxes or [np.zeros((0, 4))]).astype(np.float64).reshape(-1, 4),
        np.concatenate(labels or [np.zeros(0)]).astype(np.int64),
        scores=np.concatenate(scores or [np.zeros(0)]).astype(np.float64),
    )
