"""Torch datasets over Samples (image+JSON, manifest or RecordIO), with SSD augmentation.

Images stay uint8 until the model normalises them on the device. Training items carry
their anchor targets, matched here in the data workers (as NVIDIA's SSD does) so the loss
is one batched operation on the GPU. Validation items carry the image index; ground truth
stays in original pixels for the mAP.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2 as T

from sdod.data.augment import augment
from sdod.data.images import read_image_bytes
from sdod.data.sample import Sample
from sdod.errors import DataError
from sdod.faults import pause_point
from sdod.model.boxes import match


def decode_rgb(data: bytes, where: str) -> torch.Tensor:
    """uint8 `[3, H, W]`; grayscale, palette and alpha images become RGB (Pillow decodes:
    torchvision's decoders are deprecated in favour of torchcodec, which we do not pin)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"))
    except Exception as exc:
        # an unidentified image's message holds the buffer's repr and its address
        unknown = isinstance(exc, UnidentifiedImageError)
        detail = "not a format Pillow reads; use JPEG or PNG" if unknown else str(exc)
        reason = f"the image does not decode ({detail})"
        raise DataError(
            f"{where}: {reason}", rule="image_decodes", where=where, reason=reason
        ) from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def eval_transform(size: int) -> T.Compose:
    return T.Compose([T.Resize((size, size), antialias=True)])


@dataclass
class _Item:
    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor


class DetectionDataset(Dataset):
    """`train=True`: `(image uint8 [3,S,S], cls_targets [A], box_targets [A,4])`.
    `train=False`: `(image uint8 [3,S,S], index)`."""

    def __init__(
        self,
        samples: list[Sample],
        *,
        image_size: int,
        anchors: torch.Tensor,
        train: bool,
        augmentation: str = "ssd",
    ) -> None:
        self.samples = samples
        self.size = image_size
        self.anchors = anchors
        self.train = train
        self.augmentation = augmentation
        self.transform = eval_transform(image_size)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> _Item:
        sample = self.samples[index]
        image = decode_rgb(read_image_bytes(sample.image), sample.image)
        return _Item(
            image, torch.from_numpy(sample.boxes.copy()), torch.from_numpy(sample.labels.copy())
        )

    def __getitem__(
        self, index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | tuple[torch.Tensor, int]:
        if self.train:
            pause_point("data")
        item = self.load(index)
        if self.train:
            image, boxes, labels = augment(
                item.image, item.boxes, item.labels, size=self.size, policy=self.augmentation
            )
            cls_t, box_t = match(boxes, labels, self.anchors)
            return image, cls_t, box_t
        h, w = item.image.shape[1:]
        boxes = tv_tensors.BoundingBoxes(item.boxes, format="XYXY", canvas_size=(h, w))
        out = self.transform(
            {"image": tv_tensors.Image(item.image), "boxes": boxes, "labels": item.labels}
        )
        return out["image"].as_subclass(torch.Tensor).contiguous(), index
