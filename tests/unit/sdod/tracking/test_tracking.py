"""Tracking off costs nothing; a server that does not answer costs a job nothing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdod.tracking import NullRun, tracking_uri
from sdod.train.metrics import train_loss_line, validation_map_line
from sdod.train.tracked import TrackedLog, check_summary


def test_off_without_the_variable_and_mlflow_is_never_imported() -> None:
    code = (
        "import sys, sdod.train.job, sdod.registry, sdod.tune.steps, sdod.train.tracked\n"
        "from sdod.tracking.models import PublishRecord, mirror_publish\n"
        "from sdod.tracking.tuning import trial_env\n"
        "assert mirror_publish(PublishRecord('g', 's3://b/m', 0.5, 'training', True, 'ok')) is None\n"
        "assert trial_env('t', {}, print) == {}\n"
        "print(any(m == 'mlflow' or m.startswith('mlflow.') for m in sys.modules))"
    )
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert tracking_uri({}) is None and tracking_uri({"MLFLOW_TRACKING_URI": "http://x"})


class Recorder(NullRun):
    def __init__(self) -> None:
        self.points: list[tuple[str, float, int]] = []
        self.reports = 0

    def metric(self, name: str, value: float, step: int) -> None:
        self.points.append((name, value, step))

    def report(self) -> None:
        self.reports += 1


def test_metric_lines_become_metrics_with_steps() -> None:
    run, lines = Recorder(), list[str]()
    log = TrackedLog(lines.append, run)
    for epoch in range(2):
        log(train_loss_line(epoch, 0, "cross_entropy", 2.0 - epoch))
        log(train_loss_line(epoch, 20, "cross_entropy", 1.5 - epoch))
        log(validation_map_line(epoch, 0.1 * (epoch + 1)))
    log("an ordinary line")
    assert len(lines) == 7 and run.reports == 7
    assert [p for p in run.points if p[0] == "train:cross_entropy"] == [
        ("train:cross_entropy", 2.0, 0), ("train:cross_entropy", 1.5, 1),
        ("train:cross_entropy", 1.0, 2), ("train:cross_entropy", 0.5, 3),
    ]  # fmt: skip
    assert [p for p in run.points if p[0] == "validation:mAP"] == [
        ("validation:mAP", 0.1, 0), ("validation:mAP", 0.2, 1),
    ]  # fmt: skip


def test_the_check_summary_from_its_report(tmp_path: Path) -> None:
    assert check_summary(str(tmp_path / "none.json")) == {}
    report = tmp_path / "report.json"
    report.write_text(json.dumps({
        "passed": False, "policy": "strict", "images": {"train": 3}, "boxes": {"train": 5},
        "rules": [{"rule": "r1", "severity": "error", "success": False, "count": 2},
                  {"rule": "r2", "severity": "warning", "success": True, "count": 0}],
        "quarantined": [{"file": "a.jpg"}],
    }))  # fmt: skip
    tags = check_summary(str(report))
    assert tags["sdod.check.passed"] is False and tags["sdod.check.quarantined"] == 1
    assert tags["sdod.check.failed_rules"] == "error r1: 2"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_that_does_not_answer_never_holds_the_job_and_is_reported_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("mlflow")
    from sdod.tracking import sender

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    monkeypatch.setattr(sender, "RETRY_DELAYS", (0.05, 0.05))
    lines: list[str] = []
    run = sender.open_run(sender.RunTarget("job"), lines.append)
    started = time.perf_counter()
    for step in range(5000):
        run.metric("train:cross_entropy", 1.0, step)
    assert time.perf_counter() - started < 1.0  # appends only
    deadline = time.monotonic() + 30
    while getattr(run, "failure", None) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.report()
    run.metric("validation:mAP", 0.5, 0)
    run.finish("FINISHED")
    run.report()
    assert len(lines) == 1 and "failed; the job goes on without it" in lines[0], lines
    assert "not sent" in lines[0]
