"""sdod_train: ingest -> check annotations -> pack RecordIO -> train -> evaluate -> publish.

Wiring only: the stages live in `sdod.stages`, the task group in `plugins/sdod_pipeline.py`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG
from sdod_pipeline import SITE, pipeline_params, sdod_pipeline

DOC = """
### sdod: train an SSD object detector the SageMaker way

Give the S3 prefix (or local folder) holding SageMaker's image-format channels
(`train/`, `train_annotation/`, `validation/`, `validation_annotation/`), an output prefix and
the hyperparameters you already use with SageMaker's built-in Object Detection algorithm.
The run snapshots the data into `work_uri`, checks the annotations (report in
`<output_uri>/<job_name>/check/`), packs MXNet RecordIO, trains under `StoppingCondition`
(`<output_uri>/<job_name>/output/model.tar.gz`), evaluates VOC mAP at `overlap_threshold`
(`.../evaluation/`) and, when the evaluation's mAP >= `min_map` and not below the latest
approved version, publishes version N of `<model_registry_uri>/<model_group>/vN/`.
Tasks hand over only through these locations: any task may run on any worker.
"""

with DAG(
    dag_id="sdod_train",
    description="SageMaker-style SSD object detection training, end to end",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["sdod", "object-detection", "training"],
    doc_md=DOC,
    default_args={"retries": 2, "owner": "sdod"},
    render_template_as_native_obj=True,
    params=pipeline_params(
        job_name="sdod-demo",
        data_uri=SITE.train_data_uri,
        output_uri=SITE.train_output_uri,
        max_runtime_seconds=1800,
    ),
) as dag:
    sdod_pipeline()
