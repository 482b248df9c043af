"""sdod_retrain: the sdod_train pipeline on a schedule, or when new annotated data lands.

Runs every Monday at 03:00 UTC, and whenever the `sdod_annotations` asset is updated (emit
it from the DAG or job that delivers new labels). Same task group and Params as
`sdod_train`; set the defaults below (or Airflow Variables) to your bucket.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable
from sdod_pipeline import SITE, pipeline_params, sdod_pipeline

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
    params=pipeline_params(
        job_name="sdod-retrain",
        data_uri=SITE.retrain_data_uri,  # SDOD_RETRAIN_DATA_URI
        output_uri=SITE.retrain_output_uri,  # SDOD_RETRAIN_OUTPUT_URI
        max_runtime_seconds=3600,
    ),
) as dag:
    sdod_pipeline()
