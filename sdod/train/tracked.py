"""What a training job records in MLflow (`sdod.tracking`; on with `MLFLOW_TRACKING_URI`).

One run per job, named after it, written by rank 0 only (nested under a tuning job's run
when `SDOD_MLFLOW_PARENT_RUN_ID` names one):

- params: the job's hyperparameters, as SageMaker passes them (strings);
- metrics: SageMaker's names from the job's own metric lines: `train:cross_entropy` and
  `train:smooth_l1` (step: the n-th logged value), `validation:mAP`, `train:throughput`
  and `progress` (step: the epoch);
- tags: `sagemaker.TrainingJobName`, `sagemaker.TrainingJobStatus`, each channel's URI
  (`sdod.data.<channel>`), where the model goes (`sdod.model_uri`) and, when the job's
  annotation check ran (`<S3OutputPath>/<job>/check/report.json`), its summary
  (`sdod.check.*`);
- artifacts: `model.tar.gz` and `metrics.json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sdod.jobspec import TrainingJobSpec
from sdod.settings import RuntimeSettings
from sdod.tracking import NullRun, tracking_uri
from sdod.train.distributed import World
from sdod.train.metrics import parse_metric_line

RUN_STATUS = {"Completed": "FINISHED", "Stopped": "KILLED", "Failed": "FAILED"}


class TrackedLog:
    """The job's log: each line is logged, and each SageMaker metric line also recorded in
    the run (the metric's step: the epoch, or for the training losses the n-th value)."""

    def __init__(self, log: Callable[[str], None], run: NullRun) -> None:
        self.log, self.run = log, run
        self.counts: dict[str, int] = {}
        self.epoch = 0

    def __call__(self, line: str) -> None:
        self.log(line)
        point = parse_metric_line(line)
        if point is not None:
            if point.epoch is not None:
                self.epoch = point.epoch
            step = self.epoch
            if point.name.startswith("train:") and point.epoch is not None:  # the losses
                step = self.counts[point.name] = self.counts.get(point.name, -1) + 1
            self.run.metric(point.name, point.value, step)
        self.run.report()


class TrackedJob:
    """A training job's run (a `NullRun` when tracking is off or on ranks other than 0)."""

    def __init__(self, run: NullRun, log: Callable[[str], None]) -> None:
        self.run = run
        self.log: Callable[[str], None] = TrackedLog(log, run) if run.on else log
        self.status = "Failed"

    def done(self, status: str, files: list[Path]) -> None:
        """The job ended with `status` (SageMaker's); `files` are uploaded to the run."""
        self.status = status
        for path in files:
            self.run.artifact(str(path))


@contextmanager
def tracked_job(
    spec: TrainingJobSpec, world: World, settings: RuntimeSettings, log: Callable[[str], None]
) -> Iterator[TrackedJob]:
    """The job's run for the `with` block; the run ends with the status `done` gave, or as
    FAILED when the block raises. Tracking's own failures never reach the job."""
    if not world.is_main or tracking_uri() is None:
        yield TrackedJob(NullRun(), log)
        return
    from sdod.tracking.sender import RunTarget, open_run

    tags = _job_tags(spec)
    run = open_run(RunTarget(spec.name, parent=settings.mlflow_parent_run, tags=tags), log)
    run.params(spec.hp.to_strings())
    if not spec.container:
        run.deferred_tags(lambda: check_summary(_check_report(spec)))
    job = TrackedJob(run, log)
    try:
        yield job
    finally:
        run.tags({"sagemaker.TrainingJobStatus": job.status})
        run.finish(RUN_STATUS.get(job.status, "FAILED"))


def _job_tags(spec: TrainingJobSpec) -> dict[str, str]:
    tags = {"sagemaker.TrainingJobName": spec.name}
    for channel in spec.channels:
        tags[f"sdod.data.{channel.name}"] = channel.uri
    if not spec.container:
        from sdod.workspace import output_uris

        tags["sdod.model_uri"] = output_uris(spec).model
    return tags


def _check_report(spec: TrainingJobSpec) -> str:
    from sdod.storage import join_uri
    from sdod.workspace import output_uris

    return join_uri(output_uris(spec).check, "report.json")


def check_summary(report_uri: str) -> dict[str, Any]:
    """The annotation check's summary as tags, from its `report.json` (none when absent)."""
    from sdod.storage import exists, read_bytes

    if not exists(report_uri):
        return {}
    report = json.loads(read_bytes(report_uri))
    failed = [
        f"{r['severity']} {r['rule']}: {r['count']}"
        for r in report.get("rules", [])
        if not r.get("success", True)
    ]
    return {
        "sdod.check.report": report_uri,
        "sdod.check.passed": report.get("passed"),
        "sdod.check.policy": report.get("policy"),
        "sdod.check.images": json.dumps(report.get("images", {}), sort_keys=True),
        "sdod.check.boxes": json.dumps(report.get("boxes", {}), sort_keys=True),
        "sdod.check.quarantined": len(report.get("quarantined", [])),
        "sdod.check.failed_rules": "; ".join(failed) or "none",
    }
