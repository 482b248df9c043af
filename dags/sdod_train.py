"""sdod_train: ingest -> check annotations -> pack RecordIO -> train -> evaluate -> publish.

Wiring only: the stages live in `sdod.stages`, the task group in `plugins/sdod_pipeline.py`.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Param
from sdod_pipeline import sdod_pipeline

PROJECT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("SDOD_STATE_DIR", PROJECT / ".state"))
WORK_DIR = os.environ.get("SDOD_WORK_DIR", str(STATE / "jobs"))

# The embedded defaults: the sample dataset `make demo` writes, trained on CPU in minutes
# with the light network. Point data_uri / output_uri at s3:// for your own data.
DEMO_HYPERPARAMETERS = {
    "base_network": "mobilenet-v3",
    "use_pretrained_model": "0",
    "num_classes": "3",
    "num_training_samples": "240",
    "epochs": "30",
    "mini_batch_size": "8",
    "optimizer": "adam",
    "learning_rate": "0.002",
    "lr_scheduler_step": "22,27",
    "lr_scheduler_factor": "0.1",
    "augmentation": "light",
    "image_shape": "300",
}

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
