"""`make demo` as a new user meets it: a fresh clone, nothing installed, timed phase by phase
(issue 31: the published version in <= 10 minutes including the install, validation mAP
>= 0.9 as the median of 3 seeds, none below 0.88).

For each seed: `git clone` of this repository's HEAD into a new temporary folder, uv's cache
pointed at an empty folder (so the install fetches and unpacks everything, as on a new
machine), then `SDOD_SEED=<seed> make demo`, every line stamped with the seconds since the
clone's `make` started. The phases are read off the demo's own progress lines:

- setup: `make setup` (the virtual environment from requirements.lock);
- sample data: `sdod make-sample-data` (960 + 60 JPEGs);
- airflow database: `airflow db migrate` on the demo's new SQLite database;
- dags test start-up: `airflow dags test` until its first task starts;
- one row per task (build_spec, ingest, check_annotations, pack_recordio, train, evaluate,
  publish), from its start line to its end line;
- report: the end of the DAG run to the published version's summary (`inspect-model`).

Run: `.venv/bin/python bench/demo_run.py [--seeds 0 1 2]` (about 8 minutes a seed on the
2-core machine; nothing else should run). Commit first: the clone holds HEAD, not the
working tree. Transcripts: `bench/results/demo_run_seed<k>.log`; numbers:
`bench/results/demo_run.json`.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import machine, table, write_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TASK = re.compile(r"^demo: (\w+) (\.\.\.|ended \(\d+ s\))$")
MAP = re.compile(r"^validation mAP: ([0-9.]+)")
MARKS = {
    "setup": re.compile(r"^setup: \S+ ready in"),
    "sample data": re.compile(r"^wrote \d+ train \+ \d+ validation images"),
    "airflow database": re.compile(r"^demo: airflow dags test "),
    "published": re.compile(r"^demo: published registry version "),
    "dag ended": re.compile(r"^demo: the DAG run ended"),
}


def run_demo(seed: int, workdir: Path) -> tuple[list[tuple[float, str]], int]:
    """(seconds since start, line) for each line `make demo` printed, and its exit code."""
    clone = workdir / "sdod"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "SDOD_SEED": str(seed), "UV_CACHE_DIR": str(workdir / "uv-cache")}
    env.pop("VIRTUAL_ENV", None)
    lines: list[tuple[float, str]] = []
    start = time.monotonic()
    with subprocess.Popen(
        ["make", "demo"], cwd=clone, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - start, line.rstrip("\n")))
            print(f"[{lines[-1][0]:6.1f}] {lines[-1][1]}", flush=True)
    return lines, proc.returncode


def phases(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Seconds per phase, read off the progress lines (see the module's docstring)."""
    at = {name: t for t, line in lines for name, rule in MARKS.items() if rule.search(line)}
    out = {"setup": at["setup"], "sample data": at["sample data"] - at["setup"]}
    out["airflow database"] = at["airflow database"] - at["sample data"]
    started: dict[str, float] = {}
    for t, line in lines:
        match = TASK.match(line)
        if not match:
            continue
        name, what = match.groups()
        if what == "...":
            started[name] = t
            if len(started) == 1:
                out["dags test start-up"] = t - at["airflow database"]
        elif name in started:
            out[name] = t - started[name]
    out["report"] = at["published"] - at["dag ended"]
    out["total"] = at["published"]
    return out


def measure(seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"sdod-demo-{seed}-") as tmp:
        lines, rc = run_demo(seed, Path(tmp))
    transcript = "\n".join(f"[{t:6.1f}] {line}" for t, line in lines) + "\n"
    (RESULTS / f"demo_run_seed{seed}.log").write_text(transcript)
    if rc != 0:
        raise SystemExit(f"make demo failed for seed {seed} (exit {rc}): see the transcript")
    found = [float(m.group(1)) for _, line in lines if (m := MAP.match(line))]
    return {"seed": seed, "mAP": found[-1], **{k: round(v, 1) for k, v in phases(lines).items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    if dirty.strip():
        print("note: uncommitted changes are not in the clone; it runs HEAD")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    rows = [measure(seed) for seed in args.seeds]
    maps = [r["mAP"] for r in rows]
    summary = {
        "commit": commit,
        "median mAP": statistics.median(maps),
        "lowest mAP": min(maps),
        "longest total s": max(r["total"] for r in rows),
    }
    columns = list(dict.fromkeys(c for r in rows for c in r))
    print(table([{c: r.get(c, "") for c in columns} for r in rows], columns))
    print(machine(), summary)
    write_results("demo_run", [*rows, {"summary": summary}])


if __name__ == "__main__":
    main()
