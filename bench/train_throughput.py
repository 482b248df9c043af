"""Training throughput (images/s) of sdod's SSD vs torchvision's `ssd300_vgg16` baseline.

For each base network (vgg-16, resnet-50), image size (300, 512) and batch (32, 64): the
full training step (forward, multibox loss, backward, SGD step) in bf16 autocast with
channels-last, on device-resident uint8 images and precomputed targets, so the figure is
the model's (data loading is measured by its own benchmark). The baseline is torchvision's
`ssd300_vgg16` stepped the way its detection reference script does (list of float images,
target dicts, the model's own loss), in fp32 and in bf16 autocast.

Run on a GPU: `.venv/bin/python bench/train_throughput.py` (about 5 minutes on an H100).
`--device cpu --iters 2 --warmup 1 --quick` checks that it runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results

from sdod.model.boxes import match
from sdod.model.loss import multibox_loss
from sdod.model.ssd import SSD, SSDConfig

NUM_CLASSES = 20


def _targets(
    anchors: torch.Tensor, batch: int, size: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    cls, box = [], []
    for _ in range(batch):
        n = int(torch.randint(1, 8, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * size * 0.7
        wh = torch.rand(n, 2, generator=g) * size * 0.3 + 10
        c, b = match(
            torch.cat([xy, xy + wh], 1), torch.randint(0, NUM_CLASSES, (n,), generator=g), anchors
        )
        cls.append(c)
        box.append(b)
    return torch.stack(cls), torch.stack(box)


def _time(step, iters: int, warmup: int, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def sdod_step_rate(
    net: str, size: int, batch: int, device: torch.device, iters: int, warmup: int
) -> float:
    g = torch.Generator().manual_seed(0)
    model = (
        SSD(SSDConfig(net, NUM_CLASSES, size))
        .to(device)
        .to(memory_format=torch.channels_last)
        .train()
    )
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    cls_t, box_t = (t.to(device) for t in _targets(model.anchors.cpu(), batch, size, g))

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            cls, box = model(images)
        ce, l1 = multibox_loss(cls, box, cls_t, box_t)
        opt.zero_grad(set_to_none=True)
        (ce + l1).backward()
        opt.step()

    return batch / _time(step, iters, warmup, device)


def torchvision_step_rate(
    batch: int, device: torch.device, iters: int, warmup: int, bf16: bool
) -> float:
    from torchvision.models.detection import ssd300_vgg16

    g = torch.Generator().manual_seed(0)
    model = (
        ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1)
        .to(device)
        .train()
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9, weight_decay=5e-4)
    images = [torch.rand(3, 300, 300, generator=g).to(device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(3, 2, generator=g) * 200
        labels = torch.randint(1, NUM_CLASSES + 1, (3,), generator=g)
        targets.append(
            {"boxes": torch.cat([xy, xy + 50], 1).to(device), "labels": labels.to(device)}
        )

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            losses = model(images, targets)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    return batch / _time(step, iters, warmup, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="one small configuration per model")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    configs = [(n, s, b) for n in ("vgg-16", "resnet-50") for s in (300, 512) for b in (32, 64)]
    if args.quick:
        configs = [("vgg-16", 300, 2), ("resnet-50", 300, 2)]
    rows = []
    for net, size, batch in configs:
        rate = sdod_step_rate(net, size, batch, device, args.iters, args.warmup)
        rows.append(
            {
                "model": f"sdod {net} SSD{size}",
                "batch": batch,
                "precision": "bf16",
                "img_per_s": round(rate, 1),
            }
        )
        print(rows[-1], flush=True)
    batch = 2 if args.quick else 32
    for bf16 in (False, True):
        rate = torchvision_step_rate(batch, device, args.iters, args.warmup, bf16)
        precision = "bf16" if bf16 else "fp32"
        model = "torchvision ssd300_vgg16"
        rows.append(
            {"model": model, "batch": batch, "precision": precision, "img_per_s": round(rate, 1)}
        )
        print(rows[-1], flush=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    for row in rows:
        row["device"] = name
    print(table(rows, ["model", "batch", "precision", "img_per_s", "device"]))
    print(
        f"raw numbers: {write_results('train_throughput' + ('_quick' if args.quick else ''), rows)}"
    )


if __name__ == "__main__":
    main()
