"""How each stage's time and memory grow with the data: wall time and peak RSS per stage.

    python bench/scale.py [--images 1000 10000 100000] [--rec-gb 0.5 5 20] [--s3-max 10000]

Datasets are made quickly: the sample generator draws 200 scenes, which are duplicated
under new names up to N images (image+JSON layout); large `.rec` files are written
directly from real JPEGs padded to COCO's mean record size (~160 KiB). Every stage runs
as its own process (the CLI, or one stage function), so its peak RSS is its own
(`wait4`). The S3 stages run against moto's server over HTTP. Raw numbers go to
`bench/results/scale-<date>.json`, a picture to `docs/scale.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
COCO_RECORD = 160 << 10


INDEX = (
    "import sys, time; from sdod.data.rec_samples import read_rec; t = time.perf_counter(); "
    "read_rec(sys.argv[1]); print(f'SECONDS {time.perf_counter() - t}')"
)


def _tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and its descendants (from /proc), KiB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float | None]:
    """(wall seconds, peak RSS MiB of the process tree, seconds the process reported).

    The peak is sampled from /proc every 20 ms: `wait4`'s ru_maxrss would count this
    benchmark's own memory, which a forked child starts with."""
    import threading

    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        peak = [0]

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], _tree_rss_kib(proc.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc.wait()
        wall = time.perf_counter() - start
        sampler.join()
        out.seek(0)
        err.seek(0)
        said = out.read().decode(errors="replace")
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:6])} failed:\n{err.read().decode()[-2000:]}")
    own = next((float(x.split()[1]) for x in said.splitlines() if x.startswith("SECONDS ")), None)
    return wall, peak[0] / 1024, own


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def dataset(root: Path, n: int, base: Path) -> Path:
    """n train images (+ annotations) duplicated from the 200 base scenes."""
    images, notes = root / "train", root / "train_annotation"
    images.mkdir(parents=True)
    notes.mkdir()
    sources = sorted((base / "train").glob("*.jpg"))
    for i in range(n):
        src = sources[i % len(sources)]
        name = f"img_{i:07d}.jpg"
        shutil.copyfile(src, images / name)
        note = json.loads((base / "train_annotation" / f"{src.stem}.json").read_text())
        note["file"] = name
        (notes / f"img_{i:07d}.json").write_text(json.dumps(note))
    return root


def big_rec(path: Path, gigabytes: float, base: Path) -> Path:
    """A .rec of real JPEGs padded (after their end marker) to ~160 KiB per record."""
    import numpy as np

    from sdod.data.recordio import RecordWriter, pack_record

    jpegs = [p.read_bytes() for p in sorted((base / "train").glob("*.jpg"))[:50]]
    label = np.array([2, 5, 1, 0.1, 0.2, 0.5, 0.6], dtype=np.float32)
    target = int(gigabytes * (1 << 30))
    written, key = 0, 0
    with RecordWriter(path) as writer:
        while written < target:
            jpeg = jpegs[key % len(jpegs)]
            payload = pack_record(label, jpeg + bytes(max(0, COCO_RECORD - len(jpeg))), id=key)
            writer.write(key, payload)
            written += len(payload) + 8
            key += 1
    return path


def image_rows(n: int, data: Path, work: Path, s3: Any | None) -> list[dict[str, Any]]:
    rows = []
    train, notes = str(data / "train"), str(data / "train_annotation")
    spec = {
        "TrainingJobName": f"scale-{n}",
        "HyperParameters": {"num_classes": "3", "num_training_samples": str(n)},
        "InputDataConfig": [
            {"ChannelName": c, "DataSource": {"S3DataSource": {"S3Uri": str(data / c)}}}
            for c in ("train", "train_annotation")
        ],
        "OutputDataConfig": {"S3OutputPath": str(work / "out")},
    }
    spec_file = work / "spec.json"
    spec_file.write_text(json.dumps(spec))
    sdod = [PY, "-m", "sdod"]
    rec = str(work / "packed.rec")
    stages = [
        ("ingest (folder)", [*sdod, "ingest", "--job-spec", str(spec_file), "--job-root",
                             str(work / "job")]),
        ("validate", [*sdod, "validate", "--images", train, "--annotations", notes,
                      "--num-classes", "3", "--workers", "2"]),
        ("pack (pass-through)", [*sdod, "pack", "--images", train, "--annotations", notes,
                                 "--out", str(work / "packed")]),
        ("index .rec", [PY, "-c", INDEX, rec]),
        ("rec-dump", [*sdod, "rec-dump", rec, "--json"]),
        ("validate .rec", [*sdod, "validate", "--rec", rec, "--num-classes", "3",
                           "--workers", "2"]),
    ]  # fmt: skip
    if s3 is not None and n <= s3["max"]:
        uri = f"s3://{s3['bucket']}/scale-{n}"
        stages.insert(
            0,
            (
                "upload to S3 (copy_tree)",
                [
                    PY,
                    "-c",
                    "import sys; from sdod.transfer import copy_tree; "
                    "copy_tree(sys.argv[1], sys.argv[2], workers=16)",
                    str(data),
                    uri,
                ],
            ),
        )
        stages.insert(1, ("ingest from S3 (sync)", [
            PY, "-c", "import sys; from sdod.transfer import sync_to_local; "
            "sync_to_local(sys.argv[1], sys.argv[2], workers=16, progress=False)",
            uri, str(work / "from-s3")]))  # fmt: skip
    for stage, cmd in stages:
        wall, rss, _ = run(cmd, s3["env"] if s3 else None)
        row = {"stage": stage, "images": n, "seconds": round(wall, 2)}
        rows.append({**row, "peak_rss_mib": round(rss, 1)})
        print(f"{stage:28s} {n:>8d} images {wall:8.2f} s {rss:8.1f} MiB", flush=True)
    return rows


def rec_rows(gb: float, rec: Path) -> list[dict[str, Any]]:
    rows = []
    size = rec.stat().st_size
    cold = drop_caches()
    start = time.perf_counter()
    subprocess.run(f"cat {rec} > /dev/null", shell=True, check=True)
    cat = time.perf_counter() - start
    drop_caches()
    _, rss, own = run([PY, "-c", INDEX, str(rec)])
    assert own is not None
    for stage, seconds, mib in (("cat > /dev/null", cat, None), ("index .rec", own, rss)):
        row = {"stage": stage, "rec_bytes": size, "seconds": round(seconds, 2)}
        row["peak_rss_mib"] = None if mib is None else round(mib, 1)
        rows.append({**row, "cold_cache": cold})
        shown = "" if mib is None else f"{mib:8.1f} MiB"
        print(f"{stage:28s} {size / 2**30:8.2f} GiB {seconds:8.2f} s {shown}", flush=True)
    return rows


def picture(rows: list[dict[str, Any]], path: Path) -> None:
    """Time and peak RSS against the number of images, one line per stage (log-log)."""
    import math

    from PIL import Image, ImageDraw

    stages = sorted({r["stage"] for r in rows if "images" in r})
    sizes = sorted({r["images"] for r in rows if "images" in r})
    if len(sizes) < 2:
        return
    w, h, pad = 1100, 460, 60
    im = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(im)
    colours = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
    ]
    for panel, key, title in (
        (0, "seconds", "wall time (s)"),
        (1, "peak_rss_mib", "peak RSS (MiB)"),
    ):
        x0, x1 = pad + panel * (w // 2), (panel + 1) * (w // 2) - 20
        y0, y1 = pad, h - pad
        draw.rectangle([x0, y0, x1, y1], outline="black")
        draw.text((x0, 20), f"{title} vs images (log-log)", fill="black")
        values = [r[key] for r in rows if "images" in r and r[key]]
        lo, hi = math.log10(min(values)), math.log10(max(values)) + 1e-9
        span = math.log10(sizes[-1]) - math.log10(sizes[0])

        def sx(n: float, x0: int = x0, x1: int = x1, span: float = span) -> float:
            return x0 + (x1 - x0) * (math.log10(n) - math.log10(sizes[0])) / span

        def sy(v: float, y0: int = y0, y1: int = y1, lo: float = lo, hi: float = hi) -> float:
            return y1 - (y1 - y0) * (math.log10(v) - lo) / (hi - lo)

        for n in sizes:
            draw.text((sx(n) - 15, y1 + 5), f"{n:,}", fill="black")
        for v in (10**e for e in range(math.floor(lo), math.ceil(hi) + 1)):
            if lo <= math.log10(v) <= hi:
                draw.text((x0 - 45, sy(v) - 5), f"{v:g}", fill="black")
        for i, stage in enumerate(stages):
            pts = [(sx(r["images"]), sy(r[key])) for r in rows
                   if r.get("stage") == stage and "images" in r and r[key]]  # fmt: skip
            if len(pts) > 1:
                draw.line(pts, fill=colours[i % len(colours)], width=2)
            if panel == 0 and pts:
                draw.text((x0 + 8, y0 + 8 + 14 * i), stage, fill=colours[i % len(colours)])
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--rec-gb", type=float, nargs="*", default=[0.5, 5, 20])
    parser.add_argument("--s3-max", type=int, default=10000, help="S3 stages up to this size")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    from sdod.demo.dataset import make_sample_data

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="sdod-scale-"))
    base = scratch / "base"
    make_sample_data(base, train=200, validation=1, seed=1)
    s3 = None
    if args.s3_max:
        import boto3
        from moto.server import ThreadedMotoServer

        env = {
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        os.environ.update(env)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        url = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="scale")
        s3 = {"bucket": "scale", "max": args.s3_max, "env": {**env, "AWS_ENDPOINT_URL": url}}
    rows: list[dict[str, Any]] = []
    try:
        for n in args.images:
            data, work = scratch / f"data-{n}", scratch / f"work-{n}"
            work.mkdir()
            start = time.perf_counter()
            dataset(data, n, base)
            print(f"-- {n} images made in {time.perf_counter() - start:.1f} s", flush=True)
            rows += image_rows(n, data, work, s3)
            shutil.rmtree(data)
            shutil.rmtree(work)
        for gb in args.rec_gb:
            free = shutil.disk_usage(scratch).free / (1 << 30)
            if free < gb * 1.5:
                print(f"-- skipping {gb} GiB: {free:.0f} GiB free")
                continue
            start = time.perf_counter()
            rec = big_rec(scratch / f"big-{gb}.rec", gb, base)
            print(f"-- {gb} GiB .rec written in {time.perf_counter() - start:.1f} s", flush=True)
            rows += rec_rows(gb, rec)
            rec.unlink()
            rec.with_suffix(".idx").unlink(missing_ok=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    day = time.strftime("%Y-%m-%d")
    out = REPO / "bench" / "results" / f"scale-{day}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": day, "command": " ".join(sys.argv), "cpus": os.cpu_count(),
                               "rows": rows}, indent=2))  # fmt: skip
    picture(rows, REPO / "docs" / "scale.png")
    print(f"wrote {out} and docs/scale.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
