"""`bash bench/gpu_check.sh --dry-run`: the GPU machine's one prepared script runs every step
on the CPU, with the packages that machine lacks made unimportable, so it cannot rot while
no GPU is lent (issue 32)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"
BLOCKER = REPO / "bench" / "gpu_machine"
STEPS = ["env", "pytest-gpu", "throughput", "sample-data", "pack", "job", "job-torchrun"]

pytestmark = pytest.mark.integration


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OUT", None)  # the device machine's results folder, when one is set
    env["SDOD_PYTHON"] = sys.executable
    return env


def test_the_dry_run_runs_every_step_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=900,
        cwd=tmp_path,
    )
    log = (out / "log.txt").read_text() if (out / "log.txt").is_file() else ""
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:] + log[-6000:]
    assert "gpu_check (dry run): every step succeeded" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "log.txt",
            "env.json",
            "pytest_gpu.xml",
            "throughput.json",
            "job.json",
            "job_torchrun.json",
            "summary.json",
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["ok"] is True
    assert [s["step"] for s in summary["steps"]] == STEPS
    assert all(s["status"] == "ok" for s in summary["steps"])
    # pytest -m gpu: collected and skipped without CUDA, and the cheap ones ran on the CPU
    assert "without CUDA: {'tests': 11, 'skipped': 11, 'failures': 0, 'errors': 0}" in log
    suite = ET.parse(out / "pytest_gpu.xml").getroot().find("testsuite")
    assert suite is not None and int(suite.get("tests", "0")) == 5
    assert int(suite.get("failures", "1")) == int(suite.get("errors", "1")) == 0
    rows = json.loads((out / "throughput.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"sdod resnet-lite SSD300", "torchvision ssd300_vgg16"}
    for name in ("job", "job_torchrun"):
        job = json.loads((out / f"{name}.json").read_text())
        assert job["rc"] == 0 and job["artifact_loads"] is True, job["log_tail"]
        assert [e["epoch"] for e in job["epochs"]] == [0, 1]
        assert job["img_per_s"] > 0 and job["loss"]["logged"] >= 2
    assert "torch.distributed.run" in log and "--nproc-per-node 1" in log


def test_the_dry_run_makes_the_gpu_machines_missing_packages_unimportable() -> None:
    env = {**_env(), "PYTHONPATH": str(BLOCKER)}
    for name in ("boto3", "s3fs", "airflow", "great_expectations", "botocore.session"):
        done = subprocess.run(
            [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, env=env
        )
        assert done.returncode == 1
        top = name.partition(".")[0]
        assert f"No module named '{top}' (absent on the GPU machine" in done.stderr
    fine = subprocess.run([sys.executable, "-c", "import json, numpy"], env=env)
    assert fine.returncode == 0


def test_a_step_that_fails_fails_the_script_and_says_which(tmp_path: Path) -> None:
    env = {**_env(), "SDOD_PYTHON": str(tmp_path / "no-such-python")}
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path / "out"), "--budget", "20"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode != 0
    assert "== env: exit 127" in done.stdout
