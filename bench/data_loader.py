"""Training data pipeline throughput (images/s): what sdod's loader can feed a GPU.

The real path of a training step's data: JPEG read and decode (Pillow), augmentation
(`ssd`, `light` or `none`), resize to `image_shape`, anchor matching and box encoding, in
DataLoader workers, batched as uint8. Measured on `make-sample-data` images (about 350×300
JPEGs) for each augmentation policy, image size 300 and 512, and worker count. The GPU
target (1,450 img/s for resnet-50 SSD300) needs roughly that rate from the workers of one
machine; divide it by the single-worker rate for the cores it takes.

`.venv/bin/python bench/data_loader.py [--images N] [--workers 0,1,2]`
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results

from sdod.data.dataset import DetectionDataset
from sdod.data.imagejson import read_image_json
from sdod.demo.dataset import make_sample_data
from sdod.model.ssd import SSD, SSDConfig


def measure(samples: list, anchors: torch.Tensor, size: int, policy: str, workers: int) -> float:
    dataset = DetectionDataset(
        samples, image_size=size, anchors=anchors, train=True, augmentation=policy
    )
    loader = DataLoader(
        dataset, batch_size=32, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    next(iter(loader))  # start the workers before timing
    started, seen = time.perf_counter(), 0
    for images, _cls, _box in loader:
        seen += images.shape[0]
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--sizes", default="300,512")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per process, as a worker has
    with tempfile.TemporaryDirectory() as tmp:
        make_sample_data(tmp, train=args.images, validation=1, num_classes=3, seed=0)
        samples = read_image_json(Path(tmp) / "train", Path(tmp) / "train_annotation").samples
        rows = []
        for size in (int(s) for s in args.sizes.split(",")):
            anchors = SSD(SSDConfig("vgg-16", 3, size)).anchors
            for policy in ("ssd", "light", "none"):
                for workers in (int(w) for w in args.workers.split(",")):
                    rate = measure(samples, anchors, size, policy, workers)
                    rows.append(
                        {
                            "image_shape": size,
                            "augmentation": policy,
                            "workers": workers,
                            "images_per_s": round(rate, 1),
                        }
                    )
                    print(table(rows[-1:], list(rows[-1])), flush=True)
    print(table(rows, ["image_shape", "augmentation", "workers", "images_per_s"]))
    print(f"results: {write_results('data_loader', rows)}")


if __name__ == "__main__":
    main()
