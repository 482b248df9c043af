"""One training run of sdod's fit on the sample data, with single changes patched in: the
rows of `docs/quality.md`.

`--hp name=value` overrides a hyperparameter of the demo recipe (`sdod/demo/recipe.py`;
rows 1-20 of the table ran the recipe of their time: `--hp base_network=mobilenet-v3
--hp epochs=30 --hp lr_scheduler_step=22,27`); `--change key[=value]` applies one patch of
`_quality_changes.py` (unknown keys are labels only). Runs in-process (no job, no data
workers) on `--threads` threads and appends one JSON line to `--out`: the validation mAP
after every epoch, the best, the seconds. `--save FILE` keeps the best weights for
`_quality_diagnosis.py`; `--data` is a `make-sample-data` folder (made if missing).

    .venv/bin/python bench/_quality_ablation.py --hp epochs=12 --hp lr_scheduler_step=9,11 \
        --change prior=0.01 --out /tmp/rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sdod.demo.dataset import make_sample_data
from sdod.demo.recipe import DEMO_HYPERPARAMETERS
from sdod.hyperparameters import parse_hyperparameters
from sdod.model.ssd import SSD, SSDConfig
from sdod.train import loop
from sdod.train.stopping import StopFlag

DEMO = DEMO_HYPERPARAMETERS  # the recipe of the table (see the module docstring)


def load(root: Path) -> tuple[list, list]:
    from sdod.data.imagejson import read_image_json

    if not (root / "train").exists():
        make_sample_data(root)
    return (
        read_image_json(root / "train", root / "train_annotation").samples,
        read_image_json(root / "validation", root / "validation_annotation").samples,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/tmp/sdod-quality/bucket")
    ap.add_argument("--hp", action="append", default=[])
    ap.add_argument("--change", action="append", default=[])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=0)
    ap.add_argument("--out", default="")
    ap.add_argument("--save", default="", help="write the best weights here (torch.save)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    hp_raw = dict(DEMO)
    for kv in a.hp:
        k, v = kv.split("=", 1)
        hp_raw[k] = v
    hp = parse_hyperparameters(hp_raw)
    changes = dict(kv.split("=", 1) if "=" in kv else (kv, "1") for kv in a.change)
    import _quality_changes as patches

    patches.apply(changes)
    train, val = load(Path(a.data))
    torch.manual_seed(a.seed)
    model = SSD(SSDConfig(hp.base_network, hp.num_classes, hp.image_shape))
    patches.after_model(model, changes)
    stop = StopFlag(a.budget or None)
    t0 = time.perf_counter()
    times = []

    def on_end(epoch, model, opt, result):  # type: ignore[no-untyped-def]
        times.append(round(time.perf_counter() - t0, 1))

    res = loop.fit(
        model,
        hp,
        train,
        val,
        stop=stop,
        opts=loop.FitOptions(torch.device("cpu"), workers=0, seed=a.seed, on_epoch_end=on_end),
        log=lambda s: None,
    )
    if a.save:
        torch.save(
            {"state": res.best_state, "config": model.config.to_dict(), "changes": changes}, a.save
        )
    maps = [round(h.get("validation:mAP", 0), 3) for h in res.history]
    row = {
        "changes": changes,
        "hp": a.hp,
        "seed": a.seed,
        "maps": maps,
        "times": times,
        "best": round(res.best_map or 0, 4),
        "last": maps[-1] if maps else 0,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(row))
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
