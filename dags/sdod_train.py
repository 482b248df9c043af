"""sdod_train: ingest -> check annotations -> pack RecordIO -> train -> evaluate -> publish.

Wiring only: the stages live in `sdod.stages`, the task group in `plugins/sdod_pipeline.py`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param
from sdod_pipeline import DEMO_HYPERPARAMETERS, STATE, WORK_DIR, sdod_pipeline

DOC = """
### sdod: train an SSD object detector the SageMaker way

Give the S3 prefix (or local folder) holding SageMaker's image-format channels
(`train/`, `train_annotation/`, `validation/`, `validation_annotation/`), an output prefix and
the hyperparameters you already use with SageMaker's built-in Object Detection algorithm.
The run ingests the data, checks the annotations, packs MXNet RecordIO, trains under
`StoppingCondition`, evaluates VOC mAP at `overlap_threshold` and publishes
`<output_uri>/<job_name>/output/model.tar.gz` when mAP >= `min_map`.
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
    params={
        "job_name": Param(
            "sdod-demo",
            type="string",
            pattern="^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
            description="TrainingJobName",
        ),
        "data_uri": Param(
            str(STATE / "demo" / "bucket"),
            type="string",
            description="s3://bucket/prefix or a folder with the four image-format channels",
        ),
        "content_type": Param(
            "image/jpeg", enum=["image/jpeg", "image/png", "application/x-image"]
        ),
        "output_uri": Param(
            str(STATE / "demo" / "output"), type="string", description="S3OutputPath"
        ),
        "hyperparameters": Param(
            DEMO_HYPERPARAMETERS,
            type="object",
            description="SageMaker hyperparameters (strings), validated before ingest",
        ),
        "max_runtime_seconds": Param(
            1800, type="integer", minimum=1, description="StoppingCondition.MaxRuntimeInSeconds"
        ),
        "check_policy": Param(
            "fail",
            enum=["fail", "quarantine"],
            description="annotation gate: stop, or drop bad images",
        ),
        "max_bad_fraction": Param(
            0.1, type="number", minimum=0, maximum=1, description="quarantine at most this share"
        ),
        "min_map": Param(
            0.5,
            type="number",
            minimum=0,
            maximum=1,
            description="publish only at or above this mAP",
        ),
        "force_publish": Param(
            False, type="boolean", description="replace a better published model"
        ),
    },
) as dag:
    sdod_pipeline(WORK_DIR)
