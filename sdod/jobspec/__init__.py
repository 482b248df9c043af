"""The training-job spec: SageMaker's `CreateTrainingJob` request, typed and validated once.

`model`: the frozen `TrainingJobSpec` and `Channel` (the request kept as sent, the
hyperparameters parsed once, new specs for a changed request); `parse`: request -> spec,
every field checked; `form`: the request the Airflow trigger form builds.
"""

from sdod.jobspec.model import JOB_NAME, MAX_RUNTIME, Channel, TrainingJobSpec
from sdod.jobspec.parse import check_job_request, load_job_spec, parse_job_spec

__all__ = [
    "JOB_NAME",
    "MAX_RUNTIME",
    "Channel",
    "TrainingJobSpec",
    "check_job_request",
    "load_job_spec",
    "parse_job_spec",
]
