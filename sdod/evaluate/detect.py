"""Run a model over Samples and collect detections and ground truth for the metrics.

A model that brings its own inference (`resize` and `detect`: SageMaker's networks,
sdod/model/sagemaker_model.py) is evaluated as its endpoint serves it: its own resize of
the whole decoded image, float32 (no autocast) and its own decoding, exactly as
`sdod.serve.predictor.Predictor` does; every other model through sdod's resize and
`postprocess`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sdod.data.dataset import DetectionDataset
from sdod.data.sample import Sample
from sdod.evaluate.voc import BoxTable
from sdod.faults import pause_point
from sdod.model.postprocess import ImageDetections, detections, own_inference
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


class OwnResize(Dataset):
    """Validation items `(image uint8 [3, S, S], index)` made by a model's own `resize`."""

    def __init__(
        self, samples: list[Sample], resize: Callable[[torch.Tensor], torch.Tensor], size: int
    ) -> None:
        self.base = DetectionDataset(
            samples, image_size=size, anchors=torch.zeros(0, 4), train=False
        )
        self.resize = resize

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.resize(self.base.load(index).image), index


def _dataset(model: SSD, samples: list[Sample]) -> Dataset:
    size = model.config.image_size
    resize = own_inference(model)
    if resize is not None:
        return OwnResize(samples, resize, size)
    return DetectionDataset(samples, image_size=size, anchors=model.anchors.cpu(), train=False)


def _detections(
    model: SSD, batch: torch.Tensor, device: torch.device, nms_threshold: float, nms_topk: int
) -> list[ImageDetections]:
    """Detections (boxes in input pixels) for one batch of uint8 images."""
    # a model with its own inference computes in float32, as its endpoint does
    autocast = device.type == "cuda" and own_inference(model) is None
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        cls, box = model(batch.to(device, non_blocking=True))
    return detections(model, cls, box, nms_threshold=nms_threshold, nms_topk=nms_topk)


def _table(
    images: list[np.ndarray],
    boxes: list[np.ndarray],
    labels: list[np.ndarray],
    scores: list[np.ndarray],
) -> BoxTable:
    """One BoxTable from per-image arrays (none: an empty table)."""
    return BoxTable(
        np.concatenate(images or [np.zeros(0)]).astype(np.int64),
        np.concatenate(boxes or [np.zeros((0, 4))]).astype(np.float64).reshape(-1, 4),
        np.concatenate(labels or [np.zeros(0)]).astype(np.int64),
        scores=np.concatenate(scores or [np.zeros(0)]).astype(np.float64),
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
    nms_topk: int = 400,
    should_stop: Callable[[], bool] = lambda: False,
) -> BoxTable | None:
    """Detections in original image pixels for every sample (a BoxTable); None if
    stopped part-way. `nms_threshold` and `nms_topk` (the most detections an image keeps)
    are for sdod's own decoding (a model with its own `detect` applies its own)."""
    size = model.config.image_size
    loader = DataLoader(
        _dataset(model, samples),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    images, boxes, labels, scores = [], [], [], []
    try:
        for batch, index in loader:
            pause_point("validation")
            if should_stop():
                return None
            dets = _detections(model, batch, device, nms_threshold, nms_topk)
            for i, det in zip(index.tolist(), dets, strict=True):
                s = samples[i]
                scale = torch.tensor([s.width / size, s.height / size] * 2, device=det.boxes.device)
                boxes.append((det.boxes * scale).cpu().numpy())
                scores.append(det.scores.cpu().numpy())
                labels.append(det.labels.cpu().numpy())
                images.append(np.full(len(det.scores), i))
    finally:
        model.train(was_training)
    return _table(images, boxes, labels, scores)


def detect_sliced(predictor: Any, samples: list[Sample], slicing: Any) -> BoxTable:
    """Detections in original pixels for every sample, each image predicted tile by tile
    and merged as `sdod serve` and `predict --tile-size` do (`sdod.serve.slicing`)."""
    loader = DetectionDataset(samples, image_size=0, anchors=torch.zeros(0, 4), train=False)
    images, boxes, labels, scores = [], [], [], []
    for i, sample in enumerate(samples):
        pause_point("validation")
        image = loader.load(i).image
        found, batch = predictor.tile_batch(image, slicing)
        size = (int(image.shape[-1]), int(image.shape[-2]))
        rows = predictor.merge_tiles(predictor.forward_tiles(batch), found, size, slicing)
        table = np.asarray(rows["prediction"], dtype=np.float64).reshape(-1, 6)
        scale = np.array([sample.width, sample.height] * 2, dtype=np.float64)
        boxes.append(table[:, 2:] * scale)
        scores.append(table[:, 1])
        labels.append(table[:, 0])
        images.append(np.full(len(table), i))
    return _table(images, boxes, labels, scores)
