"""MLflow's model registry as a mirror of sdod's (`sdod.registry` stays the source of truth).

Each publish registers a version of the registered model named after the model group
(`ModelPackageGroupName`), tagged with the gate's mAP, its source and sdod's verdict
(`sdod.approval`: Approved or Rejected, with the reason); an approved one also gets
sdod's version (`sdod.version`, `sdod.uri`) and moves the alias `champion`, which thus
names what sdod's registry serves (its latest approved version). A refused publish is
registered as Rejected and leaves the alias where it was. The version links to its
training job's run when one is found (tag `sagemaker.TrainingJobName`).

The mirror never fails a publish: it is skipped when tracking is off, and its failure is
logged (`sdod.tracking` logger) after at most `MIRROR_SECONDS`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sdod.tracking import tracking_uri

CHAMPION = "champion"
MIRROR_SECONDS = 60.0
_logger = logging.getLogger("sdod.tracking")


@dataclass(frozen=True)
class PublishRecord:
    """One publish as sdod's registry decided it."""

    group: str  # the model group's name
    source: str  # the model: the version's model.tar.gz when approved, else what was offered
    mAP: float | None
    mAP_source: str  # evaluation | training
    approved: bool
    reason: str  # "published", or why the gate refused it
    version: int | None = None  # sdod's version number (approved only)
    uri: str | None = None  # sdod's version URI (approved only)
    training_job: str | None = None


def mirror_publish(record: PublishRecord) -> str | None:
    """Register `record` in MLflow's model registry; MLflow's version number, or None when
    tracking is off or the mirror failed (logged, never raised)."""
    if tracking_uri() is None:
        return None
    from sdod.tracking.sender import bounded

    try:
        return str(bounded(lambda: _register(record), MIRROR_SECONDS))
    except Exception as exc:
        _logger.warning(
            "MLflow model registry at %s not updated for %s (%s: %s); sdod's registry holds "
            "the publish", tracking_uri(), record.group, type(exc).__name__, exc,
        )  # fmt: skip
        return None


def _register(record: PublishRecord) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri())
    try:
        client.create_registered_model(record.group, description="mirrored from sdod's registry")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    run = training_run(client, record.training_job)
    source, run_id = record.source, run.info.run_id if run is not None else None
    if "://" not in source:  # a local file: MLflow takes it only from the run's artifacts
        if run is None:
            raise ValueError(f"{source} is a local file and no MLflow run of its job was found")
        source = run.info.artifact_uri.rstrip("/") + "/model.tar.gz"
    version = client.create_model_version(
        record.group, source, run_id=run_id, tags=_tags(record),
        description=_description(record), await_creation_for=0,
    )  # fmt: skip
    if record.approved:
        client.set_registered_model_alias(record.group, CHAMPION, version.version)
    return str(version.version)


def training_run(client: Any, job: str | None) -> Any:
    """The newest run of training job `job` in the experiment, None if there is none."""
    if not job or "'" in job:
        return None
    from sdod.tracking.sender import experiment_id

    found = client.search_runs(
        [experiment_id(client)], f"tags.`sagemaker.TrainingJobName` = '{job}'",
        max_results=1, order_by=["attributes.start_time DESC"],
    )  # fmt: skip
    return found[0] if found else None


def _tags(record: PublishRecord) -> dict[str, str]:
    tags = {
        "sdod.approval": "Approved" if record.approved else "Rejected",
        "sdod.reason": record.reason[:5000],
        "mAP": "" if record.mAP is None else f"{record.mAP:.6g}",
        "mAP_source": record.mAP_source,
        "sdod.source_model": record.source,
    }
    if record.version is not None:
        tags["sdod.version"] = str(record.version)
    if record.uri:
        tags["sdod.uri"] = record.uri
    if record.training_job:
        tags["sagemaker.TrainingJobName"] = record.training_job
    return tags


def _description(record: PublishRecord) -> str:
    score = "no usable mAP" if record.mAP is None else f"{record.mAP_source} mAP {record.mAP:.4f}"
    if record.approved:
        return f"sdod version v{record.version} ({record.uri}): {score}"
    return f"refused by sdod's gate: {score}; {record.reason}"
