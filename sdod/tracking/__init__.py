"""MLflow tracking of sdod's jobs: on when `MLFLOW_TRACKING_URI` is set, else nothing.

MLflow's own variables say where and what: `MLFLOW_TRACKING_URI` (the server), and
`MLFLOW_EXPERIMENT_NAME` (the experiment; `sdod` when unset). When tracking is off, nothing
here imports `mlflow` and every run is a `NullRun`, which does nothing.

Tracking never fails or stalls a job: records are buffered and sent from a background
thread (`sender.Sender`) with short HTTP timeouts and a few retries; when the server stays
unreachable the job goes on and says so once in its log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_EXPERIMENT = "sdod"


def tracking_uri(env: Mapping[str, str] | None = None) -> str | None:
    """MLflow's tracking server (`MLFLOW_TRACKING_URI`), None when tracking is off."""
    env = os.environ if env is None else env
    return env.get("MLFLOW_TRACKING_URI") or None


def experiment_name(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


class NullRun:
    """A run that records nothing: tracking is off (or this is not rank 0)."""

    run_id: str | None = None
    on = False  # whether anything is recorded

    def metric(self, name: str, value: float, step: int) -> None:
        """Record `name` = `value` at `step`."""

    def params(self, values: Mapping[str, Any]) -> None:
        """Record the run's parameters."""

    def tags(self, values: Mapping[str, Any]) -> None:
        """Set the run's tags."""

    def deferred_tags(self, read: Callable[[], Mapping[str, Any]]) -> None:
        """Tags `read` finds later, off the job's thread (it may do I/O)."""

    def artifact(self, path: str, folder: str | None = None) -> None:
        """Upload the local file `path` (into the run's `folder`)."""

    def report(self) -> None:
        """Say in the job's log, once, that tracking failed (if it has)."""

    def finish(self, status: str) -> None:
        """End the run (`FINISHED`, `FAILED` or `KILLED`), sending what is buffered."""
