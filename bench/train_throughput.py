"""Training throughput (images/s) of sdod's SSD vs torchvision's `ssd300_vgg16` baseline.

For each base network (vgg-16, resnet-50), image size (300, 512) and batch (32, 64): the
full training step (forward, multibox loss, backward, SGD step) in bf16 autocast with
channels-last, on device-resident uint8 images and precomputed targets, so the figure is
the model's (data loading is measured by its own benchmark). The baseline is torchvision's
`ssd300_vgg16` stepped the way its detection reference script does (list of float images,
target dicts, the model's own loss), in fp32 and in bf16 autocast.

Run on a GPU: `.venv/bin/python bench/train_throughput.py` (about 5 minutes on an H100);
`bench/gpu_check.sh` runs the key configurations (`--sizes 300`). `--device cpu --iters 2
--warmup 1 --quick` checks that it runs. `--out FILE` writes the raw numbers there instead
of `bench/results/`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table, write_results

from sdod.hyperparameters import parse_hyperparameters
from sdod.model.boxes import match
from sdod.model.loss import multibox_loss
from sdod.model.sagemaker_layout import build_layout
from sdod.model.sagemaker_symbol import NETWORKS as SAGEMAKER_NETWORKS
from sdod.model.ssd import SSD, SSDConfig
from sdod.train.loop import GRAD_CLIP_NORM
from sdod.train.optim import make_optimizer

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


def _time(step: Callable[[], None], iters: int, warmup: int, device: torch.device) -> float:
    """Seconds per step, after `warmup` steps (the device synchronised at both ends)."""
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
) -> tuple[float, Callable[[], None]]:
    """Images/s of sdod's training step (its loop's: bf16 autocast, channels-last, the
    multibox loss, gradient clipping, its optimiser: MXNet's SGD in multi-tensor
    operations), and the step."""
    g = torch.Generator().manual_seed(0)
    if net in SAGEMAKER_NETWORKS:  # what `sdod train` trains for vgg-16 / resnet-50
        model = build_layout(net, NUM_CLASSES, size).to(device)
    else:
        model = SSD(SSDConfig(net, NUM_CLASSES, size)).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    hp = parse_hyperparameters({"num_classes": NUM_CLASSES, "num_training_samples": batch})
    opt = make_optimizer(model, hp)  # SageMaker's defaults: sgd, momentum 0.9, wd 5e-4
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    cls_t, box_t = (t.to(device) for t in _targets(model.anchors.cpu(), batch, size, g))

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            cls, box = model(images)
        ce, l1 = multibox_loss(cls, box, cls_t, box_t)
        opt.zero_grad(set_to_none=True)
        (ce + l1).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
        opt.step()

    return batch / _time(step, iters, warmup, device), step


def profile(step: Callable[[], None], steps: int, device: torch.device, title: str) -> None:
    """Where a step's time goes: torch's profiler over `steps` steps, the top operators."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(f"profile of {title}, {steps} step(s), by {key}:")
    print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))


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


def _peak_mib(device: torch.device) -> float | None:
    """Peak memory allocated on the GPU since the last reset (None on the CPU)."""
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return round(peak, 1)


def _row(model: str, batch: int, precision: str, rate: float, device: torch.device) -> dict:
    row = {
        "model": model,
        "batch": batch,
        "precision": precision,
        "img_per_s": float(f"{rate:.4g}"),
        "peak_mib": _peak_mib(device),
    }
    print(row, flush=True)
    return row


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="one small configuration per model")
    parser.add_argument("--nets", default="vgg-16,resnet-50", help="comma-separated")
    parser.add_argument("--sizes", default="300,512", help="image sizes, comma-separated")
    parser.add_argument("--batches", default="32,64", help="batch sizes, comma-separated")
    parser.add_argument("--tv-batch", type=int, default=32, help="torchvision's batch")
    parser.add_argument("--out", type=Path, help="write the raw numbers to this file")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="STEPS", help="profile sdod's steps too"
    )
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.batches, args.tv_batch = "300", "2", 2
    return args


def main() -> None:
    args = _parse()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    nets = args.nets.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for net, size, batch in [(n, s, b) for n in nets for s in sizes for b in batches]:
        rate, step = sdod_step_rate(net, size, batch, device, args.iters, args.warmup)
        rows.append(_row(f"sdod {net} SSD{size}", batch, "bf16", rate, device))
        if args.profile:
            profile(step, args.profile, device, f"sdod {net} SSD{size} batch {batch}")
        del step
    for bf16 in (False, True):
        rate = torchvision_step_rate(args.tv_batch, device, args.iters, args.warmup, bf16)
        precision = "bf16" if bf16 else "fp32"
        rows.append(_row("torchvision ssd300_vgg16", args.tv_batch, precision, rate, device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    for row in rows:
        row["device"] = name
    print(table(rows, ["model", "batch", "precision", "img_per_s", "peak_mib", "device"]))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
        path = args.out
    else:
        path = write_results("train_throughput" + ("_quick" if args.quick else ""), rows)
    print(f"raw numbers: {path}")


if __name__ == "__main__":
    main()
