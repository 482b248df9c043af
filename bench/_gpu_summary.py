"""bench/gpu_check.sh's last word: one table of the steps and one of issue 32's targets,
printed and written to `summary.json` beside the raw results."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from _common import table

# issue 32's targets (H100 ≈ H200), SSD300 training in bf16
TARGET_IMG_PER_S = {"resnet-50": 1450.0, "vgg-16": 1000.0}
VS_TORCHVISION = 2.0  # each ≥ 2× torchvision's ssd300_vgg16 in the same run
END_TO_END = 0.85  # the job within 15 % of the model-only figure


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _pytest_figure(path: Path) -> str:
    if not path.is_file():
        return "no report"
    root = ET.parse(path).getroot()
    suite = root.find("testsuite") if root.tag == "testsuites" else root
    assert suite is not None
    n = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    return f"{passed} passed, {n['failures'] + n['errors']} failed, {n['skipped']} skipped"


def _best(rows: list[dict], model: str) -> dict | None:
    """The fastest row of `model` (over batches and precisions)."""
    mine = [r for r in rows if r["model"] == model]
    return max(mine, key=lambda r: r["img_per_s"]) if mine else None


def _throughput_figure(rows: list[dict]) -> str:
    return "; ".join(
        f"{r['model'].replace('sdod ', '')} b{r['batch']} {r['precision']} {r['img_per_s']}"
        for r in rows
    )


def _job_figure(job: dict) -> str:
    if not job:
        return "no report"
    loss = job.get("loss", {})
    return (
        f"{job.get('img_per_s')} img/s (last epoch), GPU {job.get('gpu_util_mean')} %, "
        f"peak {job.get('peak_memory_mib')} MiB, loss fell: {loss.get('fell')}, "
        f"artifact loads: {job.get('artifact_loads')}"
    )


def targets(rows: list[dict], jobs: dict[str, dict], job: tuple[str, int | None]) -> list[dict]:
    """Each target of issue 32 with the measured value and whether it was met."""
    out = []
    torchvision = _best(rows, "torchvision ssd300_vgg16")
    for net, goal in TARGET_IMG_PER_S.items():
        best = _best(rows, f"sdod {net} SSD300")
        value = best["img_per_s"] if best else None
        out.append(_target(f"{net} SSD300 bf16 img/s", value, goal))
        if torchvision and value is not None:
            ratio = round(value / torchvision["img_per_s"], 2)
            out.append(_target(f"{net} vs torchvision ssd300_vgg16 (x)", ratio, VS_TORCHVISION))
    net, batch = job
    model_only = [r for r in rows if r["model"] == f"sdod {net} SSD300" and r["batch"] == batch]
    for name, report in jobs.items():
        if model_only and report.get("img_per_s"):
            ratio = round(report["img_per_s"] / model_only[0]["img_per_s"], 2)
            out.append(_target(f"{name} / model-only {net} b{batch}", ratio, END_TO_END))
    return out


def _target(name: str, value: float | None, goal: float) -> dict:
    met = None if value is None else value >= goal
    return {"target": name, "value": value, "goal": goal, "met": met}


def summarise(
    steps_file: Path,
    results: Path,
    *,
    dry_run: bool,
    command: str,
    job: tuple[str, int | None] = ("vgg-16", None),
) -> int:
    """Print the tables, write `summary.json`; 0 when every step exited 0. `job`: the job's
    base network and batch, whose model-only figure the end-to-end ones are held against."""
    steps = [json.loads(line) for line in steps_file.read_text().splitlines() if line.strip()]
    env = _load(results / "env.json")
    rows = _load(results / "throughput.json").get("rows", [])
    jobs = {name: _load(results / f"{name}.json") for name in ("job", "job_torchrun")}
    figures = {
        "env": f"{(env.get('gpu') or {}).get('name', 'no GPU')}, torch {env.get('torch')}",
        "pytest-gpu": _pytest_figure(results / "pytest_gpu.xml"),
        "throughput": _throughput_figure(rows),
        "job": _job_figure(jobs["job"]),
        "job-torchrun": _job_figure(jobs["job_torchrun"]),
    }
    for s in steps:
        s["status"] = "skipped" if s["rc"] is None else "ok" if s["rc"] == 0 else "FAILED"
        s["figure"] = figures.get(s["step"], "")
    found = targets(rows, jobs, job)
    for t in found:
        t["met"] = "n/a (dry run)" if dry_run else t["met"]
    ok = all(s["status"] == "ok" for s in steps)
    seconds = round(sum(s["seconds"] for s in steps), 1)
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "dry_run": dry_run,
        "ok": ok,
        "seconds": seconds,
        "machine": env,
        "steps": steps,
        "targets": found,
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(steps, ["step", "status", "seconds", "limit_s", "figure"]))
    if found:
        print()
        print(table(found, ["target", "value", "goal", "met"]))
    verdict = "every step succeeded" if ok else "a step FAILED (log.txt has its output)"
    run = "gpu_check (dry run)" if dry_run else "gpu_check"
    print(f"\n{run}: {verdict} in {seconds} s; results in {results}")
    return 0 if ok else 1
