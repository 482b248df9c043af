"""Detection quality: sdod's demo recipe against torchvision's SSDlite at equal wall-clock.

Both detectors train on the same sample data (`make-sample-data`'s images, `--data-seed`)
with the same recipe (the demo's hyperparameters: optimizer, learning rate and its steps,
batch, image size, augmentation policy, warm-up) and the same wall-clock budget, counted
the same way for both: from the first training step, validation included, stopping at the
budget like `MaxRuntimeInSeconds`. Both are scored by sdod's VOC07 mAP at 0.5 on the 60
validation images after every epoch; the best epoch counts (both keep their best model).

- sdod: a real training job (`stages.train`) on the embedded demo defaults
  (`sdod.demo.recipe.DEMO_HYPERPARAMETERS`), `SDOD_SEED` = the seed.
- torchvision: `ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)`, fed
  by sdod's augmentation with the same policy, stepped with its own loss.

Run: `.venv/bin/python bench/quality.py` (3 seeds; torchvision's budget for a seed is what
sdod's whole run of that seed took; 40-80 minutes on 2 cores). `--quick` checks that it
runs (seconds).
Writes `bench/results/quality.json` and prints the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results

from sdod.data.augment import augment
from sdod.data.dataset import decode_rgb
from sdod.data.imagejson import read_image_json
from sdod.data.images import read_image_bytes
from sdod.data.sample import Sample
from sdod.demo.dataset import make_sample_data
from sdod.demo.recipe import DEMO_HYPERPARAMETERS
from sdod.evaluate.detect import ground_truth
from sdod.evaluate.voc import BoxTable, voc_map
from sdod.hyperparameters import Hyperparameters, parse_hyperparameters
from sdod.train.optim import Schedule


def run_sdod(bucket: Path, work: Path, hp_raw: dict, seed: int, budget: float) -> dict:
    from sdod import stages
    from sdod.artifact import read_artifact
    from sdod.jobspec.form import spec_from_form
    from sdod.train.metrics import parse_metric_line

    os.environ["SDOD_SEED"] = str(seed)
    spec = spec_from_form(
        job_name=f"quality-{seed}", data_uri=str(bucket), output_uri=str(work / "out"),
        hyperparameters=hp_raw, max_runtime_seconds=int(budget),
    )  # fmt: skip
    curve: list[tuple[float, float]] = []
    started: list[float] = []

    def log(line: str) -> None:
        point = parse_metric_line(line)
        if point is not None and not started:  # the first loss line: training has begun
            started.append(time.perf_counter())
        if point is not None and point.name == "validation:mAP":
            curve.append((round(time.perf_counter() - started[0], 1), point.value))

    outcome = stages.train(job_spec=spec, job_root=str(work / f"job-{seed}"), log=log)
    metrics = read_artifact(outcome.artifact).metrics  # type: ignore[arg-type]
    return _row("sdod", seed, curve, metrics["train_seconds"])


class _TVData(torch.utils.data.Dataset):
    """sdod's training augmentation, returning boxes for torchvision's own loss."""

    def __init__(self, samples: list[Sample], hp: Hyperparameters) -> None:
        self.samples, self.hp = samples, hp

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        s = self.samples[i]
        image = decode_rgb(read_image_bytes(s.image), s.image)
        image, boxes, labels = augment(
            image, torch.from_numpy(s.boxes.copy()), torch.from_numpy(s.labels.copy()),
            size=self.hp.image_shape, policy=self.hp.augmentation,
        )  # fmt: skip
        return image, {"boxes": boxes, "labels": labels + 1}


@torch.no_grad()
def _tv_detect(model: torch.nn.Module, samples: list[Sample], size: int) -> BoxTable:
    from sdod.data.dataset import eval_transform

    model.eval()
    resize = eval_transform(size)
    rows: list[tuple] = []
    for i, s in enumerate(samples):
        image = resize(decode_rgb(read_image_bytes(s.image), s.image)).float() / 255
        out = model([image])[0]
        scale = torch.tensor([s.width / size, s.height / size] * 2)
        found = zip(out["boxes"] * scale, out["scores"], out["labels"], strict=True)
        rows += [(i, box.tolist(), int(label) - 1, float(score)) for box, score, label in found]
    model.train()
    import numpy as np

    return BoxTable(
        np.array([r[0] for r in rows], np.int64),
        np.array([r[1] for r in rows], np.float64).reshape(-1, 4),
        np.array([r[2] for r in rows], np.int64),
        scores=np.array([r[3] for r in rows], np.float64),
    )


def run_torchvision(train: list[Sample], val: list[Sample], hp: Hyperparameters, seed: int,
                    budget: float, workers: int, keep: list | None = None) -> dict:  # fmt: skip
    """SSDlite320 trained for `budget` seconds, scored after each epoch; with `keep`, the
    model at its best epoch is appended to it."""
    best: list[dict] = []
    try:
        return _train_torchvision(train, val, hp, seed, budget, workers, best)
    finally:
        if keep is not None and best:
            keep.append(best[-1]["model"])


def _train_torchvision(train: list[Sample], val: list[Sample], hp: Hyperparameters, seed: int,
                       budget: float, workers: int, best: list[dict]) -> dict:  # fmt: skip
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    from sdod.train.loop import MAX_WARMUP_ITERS
    from sdod.train.optim import make_optimizer

    torch.manual_seed(seed)
    model = ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=hp.num_classes + 1
    )
    loader = torch.utils.data.DataLoader(
        _TVData(train, hp), batch_size=hp.mini_batch_size, shuffle=True, drop_last=True,
        num_workers=workers, collate_fn=lambda b: tuple(zip(*b, strict=True)),
        persistent_workers=workers > 0,
    )  # fmt: skip
    optimizer = make_optimizer(model, hp)
    iters = len(loader)
    schedule = Schedule(hp, iters, min(MAX_WARMUP_ITERS, iters))
    gt = ground_truth(val)
    start, curve = time.perf_counter(), []
    model.train()
    for epoch in range(hp.epochs):
        for b, (images, targets) in enumerate(loader):
            if time.perf_counter() - start >= budget:
                return _row("torchvision", seed, curve, time.perf_counter() - start)
            for group in optimizer.param_groups:
                group["lr"] = schedule(epoch * iters + b)
            losses = model([im.float() / 255 for im in images], list(targets))
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
        if time.perf_counter() - start >= budget:
            break
        det = _tv_detect(model, val, hp.image_shape)
        score = voc_map(det, gt, num_classes=hp.num_classes, iou_threshold=hp.overlap_threshold)
        curve.append((round(time.perf_counter() - start, 1), score.map))
        if not best or score.map > best[-1]["mAP"]:
            import copy

            best.append({"mAP": score.map, "model": copy.deepcopy(model).eval()})
    return _row("torchvision", seed, curve, time.perf_counter() - start)


def _row(detector: str, seed: int, curve: list[tuple[float, float]], seconds: float) -> dict:
    best = max(curve, key=lambda c: c[1]) if curve else (0.0, 0.0)
    return {
        "detector": detector,
        "seed": seed,
        "epochs": len(curve),
        "best_mAP": round(best[1], 4),
        "last_mAP": round(curve[-1][1], 4) if curve else 0.0,
        "best_at_s": best[0],
        "seconds": round(float(seconds), 1),
        "curve": curve,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="training seeds (comma-separated)")
    ap.add_argument("--data-seed", type=int, default=0, help="make-sample-data --seed")
    ap.add_argument("--budget", type=float, default=0,
                    help="seconds per run (default: what sdod took for that seed)")  # fmt: skip
    ap.add_argument("--only", choices=("sdod", "torchvision"), help="one detector only")
    ap.add_argument("--quick", action="store_true", help="one seed, 2 epochs: does it run")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    hp_raw = dict(DEMO_HYPERPARAMETERS)
    sizes: dict[str, int] = {}  # make-sample-data's defaults: the demo's sample set
    if args.quick:
        seeds, hp_raw["epochs"], hp_raw["lr_scheduler_step"] = seeds[:1], "2", "1"
        sizes = {"train": 48, "validation": 12}
        hp_raw["num_training_samples"] = "48"
    hp = parse_hyperparameters(hp_raw)
    work = Path(tempfile.mkdtemp(prefix="sdod-quality-"))
    bucket = work / "bucket"
    make_sample_data(bucket, seed=args.data_seed, **sizes)
    train = read_image_json(bucket / "train", bucket / "train_annotation").samples
    val = read_image_json(bucket / "validation", bucket / "validation_annotation").samples
    rows: list[dict] = []
    for seed in seeds:
        budget = args.budget
        if args.only != "torchvision":
            rows.append(run_sdod(bucket, work, hp_raw, seed, budget or 3600))
            budget = budget or rows[-1]["seconds"]  # torchvision gets what sdod took
            print(rows[-1], flush=True)
        if args.only != "sdod":
            workers = min(2, os.cpu_count() or 1)
            rows.append(run_torchvision(train, val, hp, seed, budget or 3600, workers))
            print(rows[-1], flush=True)
    columns = ["detector", "seed", "epochs", "best_mAP", "last_mAP", "best_at_s", "seconds"]
    print(table(rows, columns))
    for detector in ("sdod", "torchvision"):
        maps = [r["best_mAP"] for r in rows if r["detector"] == detector]
        if maps:
            print(f"{detector}: median {statistics.median(maps):.4f}, "
                  f"spread {max(maps) - min(maps):.4f} over {len(maps)} seeds")  # fmt: skip
    path = write_results("quality" + ("-quick" if args.quick else ""), rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
