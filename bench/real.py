"""Real photographs: aerial images of tree crowns (NEON, hand-drawn boxes, MIT) that ship in
the `deepforest` 2.1.0 wheel, tiled for training; sdod's recipe and torchvision's SSDlite320
from scratch trained on the same tiles for the same seconds, several seeds; scored on
held-out tiles and on a held-out whole image through sliced inference.

- train: `2019_YELL_2_528000_4978000_image_crop2` (2299 x 2472, 574 trees), cut by
  `sdod tile` into 400-pixel tiles (overlap 64, boxes kept when >= 60 % visible, a tenth of
  the empty tiles kept);
- held-out tiles: the tiles of `2019_YELL_2_541000_4977000_image_crop` (1249 x 1035),
  `OSBS_029` and `SOAP_061` (400 x 400 each; SOAP's Alive/Dead are trees);
- held-out whole image: `2019_YELL_2_541000_4977000_image_crop`, predicted tile by tile
  (400 pixels, overlap 64) and merged (`sdod.serve.slicing`), for both detectors;
- sdod: a real training job (`stages.train`) with the demo's recipe for one class, its
  `MaxRuntimeInSeconds` the budget; torchvision: `bench/quality.py`'s SSDlite320 runner
  with the same recipe and the seconds sdod took; both keep their best epoch; VOC07 mAP at
  0.5 by sdod's scorer.

The images are taken through pip (`pip download --no-deps deepforest==2.1.0`, cached in
`--cache`), never stored in the repository. Run: `.venv/bin/python bench/real.py
[--seeds 0,1,2] [--budget 200]` on a quiet machine (about 8 minutes a seed on 2 cores).
Writes `bench/results/real.json` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results

WHEEL = "deepforest==2.1.0"
TRAIN = ["2019_YELL_2_528000_4978000_image_crop2"]
HELD_OUT = ["2019_YELL_2_541000_4977000_image_crop", "OSBS_029", "SOAP_061"]
WHOLE = "2019_YELL_2_541000_4977000_image_crop"
TILE, OVERLAP = 400, 64


def fetch(cache: Path) -> Path:
    """deepforest's data folder (PNG + VOC XML), downloaded once into `cache`."""
    data = cache / "deepforest-data"
    if (data / f"{WHOLE}.xml").exists():
        return data
    cache.mkdir(parents=True, exist_ok=True)
    wheels = list(cache.glob("deepforest-2.1.0-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(cache)],
            check=True,
        )
        wheels = list(cache.glob("deepforest-2.1.0-*.whl"))
    data.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        for stem in TRAIN + HELD_OUT:
            for suffix in (".png", ".xml"):
                (data / f"{stem}{suffix}").write_bytes(
                    wheel.read(f"deepforest/data/{stem}{suffix}")
                )
    return data


def voc_folder(data: Path, stems: list[str], out: Path) -> Path:
    """The images and their XML, one class ("Tree"), each XML naming its PNG."""
    out.mkdir(parents=True)
    for stem in stems:
        (out / f"{stem}.png").symlink_to(data / f"{stem}.png")
        xml = (data / f"{stem}.xml").read_text()
        xml = re.sub(r"<filename>[^<]*</filename>", f"<filename>{stem}.png</filename>", xml)
        xml = re.sub(r"<name>[^<]*</name>", "<name>Tree</name>", xml)
        (out / f"{stem}.xml").write_text(xml)
    return out


def sdod_cli(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "sdod", *args, "--json"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"sdod {args[0]} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def prepare(data: Path, work: Path) -> dict:
    """Tiles for training and held-out scoring, and the whole held-out image."""
    train_voc = voc_folder(data, TRAIN, work / "voc-train")
    held_voc = voc_folder(data, HELD_OUT, work / "voc-held")
    whole_voc = voc_folder(data, [WHOLE], work / "voc-whole")
    bucket = work / "bucket"
    common = ["--to", "image-json", "--out", str(bucket), "--size", str(TILE)]
    train = sdod_cli(
        "tile",
        "--voc",
        str(train_voc),
        "--images",
        str(train_voc),
        *common,
        "--channel",
        "train",
        "--overlap",
        str(OVERLAP),
        "--empty-rate",
        "0.1",
    )
    held = sdod_cli(
        "tile",
        "--voc",
        str(held_voc),
        "--images",
        str(held_voc),
        *common,
        "--channel",
        "validation",
        "--overlap",
        str(OVERLAP),
        "--empty-rate",
        "0",
    )
    sdod_cli(
        "convert",
        "--voc",
        str(whole_voc),
        "--images",
        str(whole_voc),
        "--to",
        "image-json",
        "--out",
        str(work / "whole"),
        "--channel",
        "validation",
    )
    return {"bucket": bucket, "whole": work / "whole", "train": train, "held": held}


def recipe(train_tiles: int, budget: float, augmentation: str) -> dict:
    from sdod.demo.recipe import DEMO_HYPERPARAMETERS

    hp = dict(DEMO_HYPERPARAMETERS, num_classes="1", num_training_samples=str(train_tiles))
    hp["augmentation"] = augmentation or hp["augmentation"]
    epochs = 400  # the budget ends it; the rate drops at 80 % and 90 % of the budget's epochs
    steps_per_epoch = max(1, train_tiles // int(hp["mini_batch_size"]))
    hp["epochs"] = str(epochs)
    rough = max(10, int(budget / (0.6 * steps_per_epoch)))  # ~0.6 s a step on 2 cores
    hp["lr_scheduler_step"] = f"{max(1, int(rough * 0.8))},{max(2, int(rough * 0.9))}"
    return hp


def run_sdod(prepared: dict, work: Path, hp: dict, seed: int, budget: float) -> dict:
    from sdod import stages
    from sdod.artifact import read_artifact
    from sdod.jobspec.form import spec_from_form

    os.environ["SDOD_SEED"] = str(seed)
    spec = spec_from_form(
        job_name=f"real-{seed}",
        data_uri=str(prepared["bucket"]),
        output_uri=str(work / f"out-{seed}"),
        hyperparameters=hp,
        max_runtime_seconds=int(budget),
        content_type="image/png",
    )
    outcome = stages.train(job_spec=spec, job_root=str(work / f"job-{seed}"), log=lambda _: None)
    metrics = read_artifact(outcome.artifact).metrics  # type: ignore[arg-type]
    return {"model": str(outcome.artifact), "seconds": float(metrics["train_seconds"])}


def sdod_scores(model: str, prepared: dict) -> tuple[float, float]:
    from sdod import tools
    from sdod.serve.slicing import Slicing

    bucket, whole = prepared["bucket"], prepared["whole"]
    tiles = tools.evaluate(
        model=model,
        images=str(bucket / "validation"),
        annotations=str(bucket / "validation_annotation"),
    )
    sliced = tools.evaluate(
        model=model,
        images=str(whole / "validation"),
        annotations=str(whole / "validation_annotation"),
        slicing=Slicing(TILE, OVERLAP),
    )
    return tiles.mAP or 0.0, sliced.mAP or 0.0


def torchvision_run(prepared: dict, hp_raw: dict, seed: int, budget: float) -> tuple[float, float]:
    """SSDlite320 from scratch (bench/quality.py's runner), then both scores."""
    from quality import run_torchvision

    from sdod.data.imagejson import read_image_json
    from sdod.evaluate.detect import ground_truth
    from sdod.evaluate.voc import voc_map
    from sdod.hyperparameters import parse_hyperparameters

    bucket, whole = prepared["bucket"], prepared["whole"]
    hp = parse_hyperparameters(hp_raw)
    train = read_image_json(bucket / "train", bucket / "train_annotation").samples
    val = read_image_json(bucket / "validation", bucket / "validation_annotation").samples
    models: list[torch.nn.Module] = []
    row = run_torchvision(train, val, hp, seed, budget, min(2, os.cpu_count() or 1), keep=models)
    if not models:
        return row["best_mAP"], 0.0  # no epoch ended within the budget
    model = models[0]
    whole_samples = read_image_json(whole / "validation", whole / "validation_annotation").samples
    det = _tv_sliced(model, whole_samples, hp.image_shape)
    score = voc_map(det, ground_truth(whole_samples), num_classes=1, iou_threshold=0.5).map
    return row["best_mAP"], score


@torch.no_grad()
def _tv_sliced(model: torch.nn.Module, samples: list, size: int) -> Any:
    """torchvision's detections on whole images, tile by tile, merged as sdod merges."""
    import numpy as np

    from sdod.data.dataset import decode_rgb, eval_transform
    from sdod.data.images import read_image_bytes
    from sdod.evaluate.voc import BoxTable
    from sdod.serve.slicing import Slicing, merge, tiles

    model.eval()
    resize, slicing, rows = eval_transform(size), Slicing(TILE, OVERLAP), []
    for i, s in enumerate(samples):
        image = decode_rgb(read_image_bytes(s.image), s.image)
        found, crops = tiles(image, slicing)
        answers = []
        for crop in crops:
            out = model([resize(crop).float() / 255])[0]
            boxes = (out["boxes"] / size).clamp(0, 1)
            answers.append(
                {
                    "prediction": [
                        [float(label) - 1, float(score), *box.tolist()]
                        for box, score, label in zip(
                            boxes, out["scores"], out["labels"], strict=True
                        )
                    ]
                }
            )
        merged = merge(answers, found, (s.width, s.height), slicing, nms_threshold=0.45)
        rows += [
            (i, [r[2] * s.width, r[3] * s.height, r[4] * s.width, r[5] * s.height], int(r[0]), r[1])
            for r in merged["prediction"]
        ]
    return BoxTable(
        np.array([r[0] for r in rows], np.int64),
        np.array([r[1] for r in rows], np.float64).reshape(-1, 4),
        np.array([r[2] for r in rows], np.int64),
        scores=np.array([r[3] for r in rows], np.float64),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=float, default=200.0, help="sdod's MaxRuntimeInSeconds")
    ap.add_argument("--augmentation", default="", help="instead of the demo's (light)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "sdod"), help="wheel cache")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sdod-real-"))
    prepared = prepare(fetch(Path(args.cache)), work)
    train_tiles = prepared["train"]["tiles"]
    print(f"tiles: {train_tiles} train, {prepared['held']['tiles']} held-out", flush=True)
    hp = recipe(train_tiles, args.budget, args.augmentation)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        started = time.monotonic()
        job = run_sdod(prepared, work, hp, seed, args.budget)
        tiles_map, whole_map = sdod_scores(job["model"], prepared)
        rows.append(
            {
                "detector": "sdod",
                "seed": seed,
                "tiles_mAP": round(tiles_map, 4),
                "whole_image_mAP": round(whole_map, 4),
                "seconds": round(job["seconds"], 1),
            }
        )
        print(rows[-1], f"({time.monotonic() - started:.0f} s)", flush=True)
        tv_tiles, tv_whole = torchvision_run(prepared, hp, seed, job["seconds"])
        rows.append(
            {
                "detector": "torchvision SSDlite320",
                "seed": seed,
                "tiles_mAP": round(tv_tiles, 4),
                "whole_image_mAP": round(tv_whole, 4),
                "seconds": round(job["seconds"], 1),
            }
        )
        print(rows[-1], flush=True)
    print(table(rows, ["detector", "seed", "tiles_mAP", "whole_image_mAP", "seconds"]))
    for detector in ("sdod", "torchvision SSDlite320"):
        maps = [r["tiles_mAP"] for r in rows if r["detector"] == detector]
        print(f"{detector}: median tiles mAP {statistics.median(maps):.4f}")
    setup = {"tiles": prepared["train"], "held_out": prepared["held"], "hyperparameters": hp}
    print(f"wrote {write_results('real', [setup, *rows])}")


if __name__ == "__main__":
    main()
