"""One trial of a tuning job: its name, its record, its training-job process."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

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
    """One trial's training job in its own process, its mAP lines reported as they come."""

    def __init__(self, request: dict[str, Any], root: Path, env: dict[str, str]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "request.json").write_text(json.dumps(request, indent=2))
        self.root = root
        self.log = (root / "train.log").open("w")
        cmd = [sys.executable, "-m", "sdod", "train", "--json"]
        cmd += ["--job-spec", str(root / "request.json"), "--job-root", str(root / "job")]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.stopped = False

    def lines(self) -> Any:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.write(line)
            self.log.flush()
            yield line

    def stop(self) -> None:
        if not self.stopped and self.proc.poll() is None:
            self.stopped = True
            self.proc.send_signal(signal.SIGTERM)

    def outcome(self) -> dict[str, Any]:
        out, _ = self.proc.communicate()
        self.log.close()
        try:
            return dict(json.loads(out))
        except ValueError:
            tail = (self.root / "train.log").read_text()[-400:]
            return {"status": "Failed", "message": f"exit {self.proc.returncode}: {tail}"}
