"""sdod_retrain: the sdod_train pipeline on a schedule, or when new annotated data lands.

Runs every Monday at 03:00 UTC, and whenever the `sdod_annotations` asset is updated (emit
it from the DAG or job that delivers new labels). Same task group and Params as
`sdod_train`; set the defaults below (or Airflow Variables) to your bucket.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, Asset, Param
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable
from sdod_pipeline import DEMO_HYPERPARAMETERS, STATE, WORK_DIR, sdod_pipeline

ANNOTATIONS = Asset(name="sdod_annotations")

with DAG(
    dag_id="sdod_retrain",
    description="Scheduled / data-triggered retraining with the sdod pipeline",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=ANNOTATIONS
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["sdod", "object-detection", "retraining"],
    doc_md=__doc__,
    default_args={"retries": 2, "owner": "sdod"},
    render_template_as_native_obj=True,
    params={
        "job_name": Param(
            "sdod-retrain", type="string", pattern="^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
        ),
        "data_uri": Param(
            os.environ.get("SDOD_RETRAIN_DATA_URI", str(STATE / "demo" / "bucket")), type="string"
        ),
        "content_type": Param(
            "image/jpeg", enum=["image/jpeg", "image/png", "application/x-image"]
        ),
        "output_uri": Param(
            os.environ.get("SDOD_RETRAIN_OUTPUT_URI", str(STATE / "retrain" / "output")),
            type="string",
        ),
        "hyperparameters": Param(DEMO_HYPERPARAMETERS, type="object"),
        "max_runtime_seconds": Param(3600, type="integer", minimum=1),
        "check_policy": Param(
            "fail",
            enum=["fail", "quarantine"],
            description="annotation gate: stop, or drop bad images",
        ),
        "max_bad_fraction": Param(
            0.1, type="number", minimum=0, maximum=1, description="quarantine at most this share"
        ),
        "min_map": Param(0.5, type="number", minimum=0, maximum=1),
        "force_publish": Param(False, type="boolean"),
    },
) as dag:
    sdod_pipeline(WORK_DIR)
