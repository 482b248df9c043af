"""The Airflow trigger form's CreateTrainingJob request: the four image-format channels
under one data URI, as SageMaker lays them out."""

from __future__ import annotations

from typing import Any

from sdod.jobspec.parse import parse_job_spec

IMAGE_CHANNELS = ("train", "validation", "train_annotation", "validation_annotation")


def spec_from_form(**fields: Any) -> dict[str, Any]:
    """`form_request(**fields)`, validated before it is returned (the first problem raises)."""
    spec = form_request(**fields)
    _ = parse_job_spec(spec).hp  # its hyperparameters are checked too
    return spec


def form_request(
    *,
    job_name: str,
    data_uri: str,
    output_uri: str,
    hyperparameters: dict[str, Any],
    max_runtime_seconds: int,
    content_type: str = "image/jpeg",
) -> dict[str, Any]:
    """A CreateTrainingJob request from the Airflow trigger form: the four image-format
    channels under `data_uri` (SageMaker's layout). Not validated: `spec_from_form` raises
    its first problem, `check_job_request` lists them all."""
    base = data_uri.rstrip("/")
    hp = {k: str(v) for k, v in hyperparameters.items()}
    spec: dict[str, Any] = {
        "TrainingJobName": job_name,
        "HyperParameters": hp,
        "InputDataConfig": [
            {
                "ChannelName": name,
                "ContentType": content_type,
                "InputMode": "File",
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{base}/{name}/"}
                },
            }
            for name in IMAGE_CHANNELS
        ],
        "OutputDataConfig": {"S3OutputPath": output_uri},
        "ResourceConfig": {"InstanceCount": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": int(max_runtime_seconds)},
    }
    return spec
