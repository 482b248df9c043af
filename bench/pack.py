"""Packing throughput: 2,000 real JPEGs, pass-through and resize-300, 1 and 2 workers.

The images are the 20 photographs MXNet's fixtures were made from (scikit-image's sample
data, 160x240..1200x810, ~72 KB average), copied 100 times under distinct names: the kind
of set im2rec was measured on. Run: `.venv/bin/python bench/pack.py [--copies 100]`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results

from sdod.data.pack import PackOptions, items_from_lst, pack
from sdod.data.rec_label import format_lst_line, parse_lst_line

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mxnet"


def make_set(root: Path, copies: int) -> Path:
    lines = (FIXTURES / "rec" / "train.lst").read_text().splitlines()
    out, key = [], 0
    for c in range(copies):
        for line in lines:
            _, label, rel = parse_lst_line(line, "train.lst")
            name = f"{c:03d}_{rel}"
            shutil.copyfile(FIXTURES / "images" / rel, root / name)
            out.append(format_lst_line(key, label, name))
            key += 1
    lst = root / "set.lst"
    lst.write_text("\n".join(out) + "\n")
    return lst


def run(lst: Path, root: Path, out: Path, resize: int, workers: int, repeats: int) -> dict:
    items = items_from_lst(lst, root)
    best = float("inf")
    for _ in range(repeats):
        for old in out.glob("b.*"):  # a fresh output each time, as a first run has
            old.unlink()
        result = pack(
            items, out / "b", options=PackOptions(resize=resize), workers=workers, progress=False
        )
        best = min(best, result.seconds)
    mode = f"resize-{resize}" if resize else "pass-through"
    return {
        "mode": mode,
        "workers": workers,
        "images": result.records,
        "seconds": round(best, 3),
        "img_per_s": round(result.records / best),
        "MB_per_s": round(result.bytes / 1e6 / best, 1),
        "scope": "in-process",
    }


def whole_process(lst: Path, root: Path, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "sdod",
        "pack",
        "--lst",
        str(lst),
        "--root",
        str(root),
        "--out",
        str(out / "w"),
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    n = len(lst.read_text().splitlines())
    size = (out / "w.rec").stat().st_size
    return {
        "mode": "pass-through",
        "workers": 1,
        "images": n,
        "seconds": round(seconds, 3),
        "img_per_s": round(n / seconds),
        "MB_per_s": round(size / 1e6 / seconds, 1),
        "scope": "whole process (python -m sdod pack)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "images", Path(tmp) / "out"
        root.mkdir()
        out.mkdir()
        lst = make_set(root, args.copies)
        rows = [
            run(lst, root, out, 0, 1, args.repeats),
            run(lst, root, out, 0, 2, args.repeats),
            whole_process(lst, root, out),
            run(lst, root, out, 300, 1, 1),
            run(lst, root, out, 300, 2, 1),
        ]
    print(table(rows, ["mode", "workers", "images", "seconds", "img_per_s", "MB_per_s", "scope"]))
    print(f"raw numbers: {write_results('pack', rows)}")


if __name__ == "__main__":
    main()
