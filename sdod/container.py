"""The SageMaker container contract: reading a training job from `/opt/ml`.

SageMaker starts the image as `<image> train` or `<image> serve` (`sdod.entrypoint`).
Its folders are sdod's job layout (`sdod.joblayout.JobLayout`, rooted at `/opt/ml`).
Training reads `/opt/ml/input/config/{hyperparameters,inputdataconfig,resourceconfig}.json`
and `TRAINING_JOB_NAME`, the channels in `/opt/ml/input/data/<channel>/`, keeps checkpoints
in `/opt/ml/checkpoints` (SageMaker syncs them), writes the model's files unpacked into
`/opt/ml/model` (SageMaker tars and uploads them) and the reason for a failure in
`/opt/ml/output/failure`; the hosts `algo-1`, `algo-2`, ... meet through a rendezvous on the
first. Serving loads `/opt/ml/model` and listens on 0.0.0.0:8080. `SDOD_SAGEMAKER_ROOT`
relocates `/opt/ml` (the tests use a temporary folder; `sdod.settings.ContainerSettings`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from sdod.errors import UserError
from sdod.joblayout import JobLayout
from sdod.jobspec import MAX_RUNTIME, Channel, TrainingJobSpec
from sdod.settings import RDZV_PORT, ContainerSettings


def sagemaker_root() -> Path:
    """`/opt/ml`, or where `SDOD_SAGEMAKER_ROOT` moves it."""
    return ContainerSettings.from_env().root


class ContainerJob(NamedTuple):
    """The training job SageMaker set up in a container: resolved once at the edge of the
    process (`stages.train`, or a torchrun worker's `job_root_spec`) and passed down."""

    root: str  # the job root: /opt/ml
    spec: TrainingJobSpec
    rdzv_endpoint: str | None  # the first host's, when the job has several


def _config(root: Path, name: str) -> Any:
    path = JobLayout(root).config_dir / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def container_job(root: Path | None = None) -> ContainerJob:
    """The training job SageMaker set up under `root` (default: `/opt/ml`)."""
    settings = ContainerSettings.from_env()
    root = settings.root if root is None else root
    hyperparameters = _config(root, "hyperparameters.json")
    if hyperparameters is None:
        raise UserError(
            "give --job-root (a folder made by `sdod ingest`) or --job-spec; or run inside a "
            f"SageMaker training container ({root}/input/config/hyperparameters.json, or "
            "$SDOD_SAGEMAKER_ROOT pointing at such a folder)"
        )
    channels_config = _config(root, "inputdataconfig.json") or {}
    resources = _config(root, "resourceconfig.json") or {}
    channels = []
    for name, entry in channels_config.items():
        mode = entry.get("TrainingInputMode", "File")
        if mode not in ("File", "FastFile"):  # FastFile: SageMaker mounts it as files
            raise UserError(
                f"channel {name}: InputMode {mode} inside a SageMaker container delivers a "
                "FIFO, which sdod does not read; use File or FastFile mode (or run sdod "
                "outside SageMaker, where Pipe streams from S3)"
            )
        channels.append(
            Channel(
                name,
                str(JobLayout(root).channel_dir(name)),
                entry.get("ContentType"),
                "File",
                record_wrapper=entry.get("RecordWrapperType"),
                s3_data_type=entry.get("S3DataType", "S3Prefix"),
            )
        )
    hosts = resources.get("hosts") or ["algo-1"]
    spec = TrainingJobSpec(
        name=settings.job_name,
        hyperparameters={str(k): str(v) for k, v in hyperparameters.items()},
        channels=tuple(channels),
        output_path="",
        instance_count=len(hosts),
        max_runtime_seconds=settings.max_runtime_seconds or MAX_RUNTIME,
        container=True,
    )
    endpoint = f"{hosts[0]}:{RDZV_PORT}" if len(hosts) > 1 else None
    return ContainerJob(str(root), spec, endpoint)
