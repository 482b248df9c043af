"""sdod_tune: a hyperparameter tuning job (SageMaker's automatic model tuning).

Wiring only: the task group is in `plugins/sdod_tuning.py`, the search in `sdod.tune`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG
from sdod_tuning import sdod_tuning, tuning_params

DOC = """
### sdod: tune an SSD object detector the SageMaker way

Paste the `CreateHyperParameterTuningJob` request you send to SageMaker (objective
`validation:mAP`, ranges, `ResourceLimits`, `TrainingJobDefinition`). The run prepares the
data once (snapshot, annotation check, RecordIO), then runs the trials as training jobs on
the training queue, `MaxParallelTrainingJobs` at a time, each asking the shared study for
its hyperparameters when it starts; stops launching at `MaxNumberOfTrainingJobs`,
`MaxRuntimeInSeconds` or `TargetObjectiveMetricValue`; writes
`<S3OutputPath>/<tuning-job>/describe.json`; evaluates the best trial's model and
publishes it when it passes the gate (`min_map`, not below the latest approved version).
"""

with DAG(
    dag_id="sdod_tune",
    description="SageMaker-style hyperparameter tuning of SSD object detection",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["sdod", "object-detection", "tuning"],
    doc_md=DOC,
    default_args={"retries": 2, "owner": "sdod"},
    render_template_as_native_obj=True,
    params=tuning_params(),
) as dag:
    sdod_tuning()
