"""A tuning job in MLflow: one parent run per tuning job, each trial's training job a
nested run under it (its process is told the parent: `SDOD_MLFLOW_PARENT_RUN_ID`).

The parent is found by its tag `sagemaker.HyperParameterTuningJobName` (so the DAG's
separate tasks, and a re-run of the job, share one run) or created with the job's settings
as params. At the end it gets the best trial's objective (`validation:mAP`), the job's
status, `describe.json` and `objective.png`. Each request is bounded (`CALL_SECONDS`); a
failure is said once in the log and the tuning job goes on without tracking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sdod.settings import MLFLOW_PARENT_RUN_VARIABLE
from sdod.tracking import tracking_uri

CALL_SECONDS = 30.0
TAG = "sagemaker.HyperParameterTuningJobName"


def trial_env(name: str, params: Mapping[str, Any], log: Callable[[str], None]) -> dict[str, str]:
    """The variables that nest the trials' runs under tuning job `name`'s run (found or
    created with `params`); none when tracking is off or the server does not answer."""
    if tracking_uri() is None:
        return {}
    run_id = _bounded(lambda: _parent(name, params), name, log)
    return {MLFLOW_PARENT_RUN_VARIABLE: run_id} if run_id else {}


def tuning_finished(
    name: str, summary: dict[str, Any], files: list[Path], log: Callable[[str], None]
) -> None:
    """Record the tuning job's outcome (`summary`: DescribeHyperParameterTuningJob's) and
    `files` in its run, and end it."""
    if tracking_uri() is None:
        return
    _bounded(lambda: _finish(name, summary, files), name, log)


def _bounded(call: Callable[[], Any], name: str, log: Callable[[str], None]) -> Any:
    from sdod.tracking.sender import bounded

    try:
        return bounded(call, CALL_SECONDS)
    except Exception as exc:
        log(
            f"MLflow tracking at {tracking_uri()} failed for tuning job {name}; it goes on "
            f"without it: {type(exc).__name__}: {str(exc)[:300]}"
        )
        return None


def _find(client: Any, name: str) -> Any:
    from sdod.tracking.sender import experiment_id

    found = client.search_runs(
        [experiment_id(client)], f"tags.`{TAG}` = '{name}'", max_results=1,
        order_by=["attributes.start_time DESC"],
    )  # fmt: skip
    return found[0] if found else None


def _parent(name: str, params: Mapping[str, Any]) -> str:
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from sdod.tracking.sender import experiment_id

    client = MlflowClient(tracking_uri())
    found = _find(client, name)
    if found is not None:
        return str(found.info.run_id)
    run = client.create_run(experiment_id(client), run_name=name, tags={TAG: name})
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i : i + 100])
    return str(run.info.run_id)


def _finish(name: str, summary: dict[str, Any], files: list[Path]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri())
    found = _find(client, name)
    if found is None:
        return
    run_id = found.info.run_id
    status = str(summary.get("HyperParameterTuningJobStatus", ""))
    client.set_tag(run_id, "sagemaker.HyperParameterTuningJobStatus", status)
    best = summary.get("BestTrainingJob")
    if best:
        objective = best["FinalHyperParameterTuningJobObjectiveMetric"]
        client.log_metric(run_id, objective["MetricName"], float(objective["Value"]))
        client.set_tag(run_id, "sdod.best_training_job", best["TrainingJobName"])
    for path in files:
        client.log_artifact(run_id, str(path))
    ended = {"Completed": "FINISHED", "Failed": "FAILED"}.get(status, "KILLED")
    client.set_terminated(run_id, ended)
