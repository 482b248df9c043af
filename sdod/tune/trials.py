"""One trial of a tuning job: its name, its record, its training-job process."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO

from sdod.train.metrics import MetricPoint
from sdod.train.process import TrainingProcess, train_command
from sdod.tune.spec import OBJECTIVE


def trial_name(tuning_job: str, number: int, tuned: dict[str, str]) -> str:
    """SageMaker's `<tuning-job>-<NNN>-<8 hex>` (unique per hyperparameters)."""
    digest = hashlib.sha1(json.dumps(tuned, sort_keys=True).encode()).hexdigest()[:8]
    return f"{tuning_job}-{number:03d}-{digest}"


@dataclass
class TrialRecord:
    name: str
    number: int
    hyperparameters: dict[str, str]
    status: str = "InProgress"  # Completed | Stopped | Failed
    objective: float | None = None
    history: list[float] = field(default_factory=list)
    early_stopped: bool = False
    failure: str = ""
    started: float = 0.0
    ended: float = 0.0
    model: str | None = None

    def to_attrs(self) -> dict[str, Any]:
        """The record as the study keeps it (a trial's user attributes)."""
        attrs = asdict(self)
        attrs["TrainingJobName"] = attrs.pop("name")
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> TrialRecord:
        known = {f.name for f in fields(cls)} - {"name"}
        return cls(name=attrs["TrainingJobName"], **{k: v for k, v in attrs.items() if k in known})

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "TrainingJobName": self.name,
            "TunedHyperParameters": self.hyperparameters,
            "TrainingJobStatus": self.status,
            "ObjectiveStatus": "Succeeded" if self.objective is not None else "Failed",
            "TrainingStartTime": iso_time(self.started),
            "TrainingEndTime": iso_time(self.ended),
        }
        if self.objective is not None:
            out["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "MetricName": OBJECTIVE,
                "Value": self.objective,
            }
        if self.early_stopped:
            out["EarlyStopped"] = True
        if self.failure:
            out["FailureReason"] = self.failure
        if self.model:
            out["ModelArtifacts"] = {"S3ModelArtifacts": self.model}
        return out


def iso_time(t: float) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None


class TrialProcess:
    """One trial's training job: `sdod train` under the training-process supervisor
    (`sdod.train.process.TrainingProcess`, as the Airflow operator runs a job), its log kept
    in `<root>/train.log`, its metric points passed to `on_metric` as they come.

    Nothing happens before `start()`; `stop()` asks the job to stop (SIGTERM, then SIGKILL
    after the grace period); `wait()` gives `sdod train --json`'s outcome.
    """

    def __init__(
        self,
        request: dict[str, Any],
        root: Path,
        env: dict[str, str],
        on_metric: Callable[[MetricPoint], None] | None = None,
    ) -> None:
        self.request = request
        self.root = root
        self.process = TrainingProcess(
            train_command(job_root=root / "job", job_spec=root / "request.json", json_outcome=True),
            env=env,
            on_line=self._keep,
            on_metric=on_metric,
            stdout=root / "outcome.json",
        )
        self._log: TextIO | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "request.json").write_text(json.dumps(self.request, indent=2))
        self._log = (self.root / "train.log").open("w")
        try:
            self.process.start()
        except BaseException:
            self._log.close()
            raise

    def _keep(self, line: str) -> None:
        assert self._log is not None
        self._log.write(line + "\n")
        self._log.flush()

    def stop(self) -> None:
        self.process.stop()

    def wait(self) -> dict[str, Any]:
        """The job's outcome (`JobOutcome.to_dict()`), or a Failed one naming its exit."""
        assert self._log is not None, "wait() before start()"
        try:
            ended = self.process.wait()
        finally:
            self._log.close()
        try:
            return dict(json.loads((self.root / "outcome.json").read_text()))
        except ValueError:
            tail = (self.root / "train.log").read_text()[-400:]
            return {"status": "Failed", "message": f"exit {ended.exit_code}: {tail}"}
