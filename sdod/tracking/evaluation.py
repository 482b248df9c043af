"""An evaluation recorded in its training job's MLflow run: `evaluation:mAP` and the
evaluation's files (metrics.json, per_class_ap.csv, the PR curves and example pictures) as
artifacts under `evaluation/`. Off without `MLFLOW_TRACKING_URI`; a failure (no server, no
run of that job) is logged and never raised, after at most `MIRROR_SECONDS`."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from sdod.storage import S3Options, is_s3
from sdod.tracking import tracking_uri
from sdod.tracking.models import MIRROR_SECONDS, training_run

_logger = logging.getLogger("sdod.tracking")


def record_evaluation(
    *, training_job: str, out: str, mAP: float | None, s3: S3Options | None = None
) -> bool:
    """Add the evaluation written to `out` (a folder or an object prefix) to the run of
    `training_job`; whether it was recorded."""
    if tracking_uri() is None:
        return False
    from sdod.tracking.sender import bounded

    try:
        return bool(bounded(lambda: _record(training_job, out, mAP, s3), MIRROR_SECONDS))
    except Exception as exc:
        _logger.warning(
            "MLflow at %s: the evaluation of %s not recorded (%s: %s); it is in %s",
            tracking_uri(), training_job, type(exc).__name__, exc, out,
        )  # fmt: skip
        return False


def _record(job: str, out: str, mAP: float | None, s3: S3Options | None) -> bool:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri())
    run = training_run(client, job)
    if run is None:
        raise LookupError(f"no MLflow run of training job {job}")
    if mAP is not None:
        client.log_metric(run.info.run_id, "evaluation:mAP", float(mAP))
    with tempfile.TemporaryDirectory(prefix="sdod-evaluation-") as tmp:
        folder = Path(out.removeprefix("file://"))
        if is_s3(out):
            from sdod.transfer import sync_to_local

            folder = Path(tmp)
            sync_to_local(out.rstrip("/") + "/", folder, s3=s3, progress=False)
        client.log_artifacts(run.info.run_id, str(folder), "evaluation")
    return True
