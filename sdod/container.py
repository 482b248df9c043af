"""The SageMaker container contract: the same image trains and serves as a bring-your-own
algorithm container, and runs every Airflow role.

SageMaker starts the image as `<image> train` or `<image> serve`. Training reads
`/opt/ml/input/config/{hyperparameters,inputdataconfig,resourceconfig}.json` and
`TRAINING_JOB_NAME`, the channels in `/opt/ml/input/data/<channel>/`, keeps checkpoints in
`/opt/ml/checkpoints` (SageMaker syncs them), writes the model's files unpacked into
`/opt/ml/model` (SageMaker tars and uploads them) and the reason for a failure in
`/opt/ml/output/failure`; the hosts `algo-1`, `algo-2`, ... meet through a rendezvous on the
first. Serving loads `/opt/ml/model` and listens on 0.0.0.0:8080. `SDOD_SAGEMAKER_ROOT`
relocates `/opt/ml` (the tests use a temporary folder).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from sdod.config import Channel, TrainingJobSpec
from sdod.errors import UserError

ROOT_ENV = "SDOD_SAGEMAKER_ROOT"
RDZV_PORT = 29400


def sagemaker_root() -> Path:
    return Path(os.environ.get(ROOT_ENV, "/opt/ml"))


def _config(root: Path, name: str) -> Any:
    path = root / "input" / "config" / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def container_job() -> tuple[str, TrainingJobSpec, str | None]:
    """(job root, spec, rendezvous endpoint) of the training job SageMaker set up here."""
    root = sagemaker_root()
    hyperparameters = _config(root, "hyperparameters.json")
    if hyperparameters is None:
        raise UserError(
            "give --job-root (a folder made by `sdod ingest`) or --job-spec; or run inside a "
            f"SageMaker training container ({root}/input/config/hyperparameters.json, or "
            f"${ROOT_ENV} pointing at such a folder)"
        )
    channels_config = _config(root, "inputdataconfig.json") or {}
    resources = _config(root, "resourceconfig.json") or {}
    channels = []
    for name, entry in channels_config.items():
        mode = entry.get("TrainingInputMode", "File")
        if mode != "File":
            raise UserError(
                f"channel {name}: InputMode {mode} inside a SageMaker container delivers a "
                "FIFO, which sdod does not read; use File mode (or run sdod outside SageMaker, "
                "where Pipe and FastFile stream from S3)"
            )
        channels.append(
            Channel(
                name,
                str(root / "input" / "data" / name),
                entry.get("ContentType"),
                "File",
                record_wrapper=entry.get("RecordWrapperType"),
                s3_data_type=entry.get("S3DataType", "S3Prefix"),
            )
        )
    hosts = resources.get("hosts") or ["algo-1"]
    spec = TrainingJobSpec(
        name=os.environ.get("TRAINING_JOB_NAME", "sagemaker-job"),
        hyperparameters={str(k): str(v) for k, v in hyperparameters.items()},
        channels=tuple(channels),
        output_path="",
        instance_count=len(hosts),
        max_runtime_seconds=int(os.environ.get("SDOD_MAX_RUNTIME_SECONDS", 86400 * 28)),
        container=True,
    )
    endpoint = f"{hosts[0]}:{RDZV_PORT}" if len(hosts) > 1 else None
    return str(root), spec, endpoint


def main(argv: list[str] | None = None) -> int:
    """The image's entrypoint: `train` and `serve` as SageMaker calls them, anything else
    is an Airflow command (`api-server`, `scheduler`, `celery worker`, ...)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["train"], ["serve"]):
        from sdod.cli import main as sdod_main

        return sdod_main(args)
    beside = Path(sys.executable).parent / "airflow"  # this environment's, else PATH's
    program = str(beside) if beside.is_file() else "airflow"
    os.execvp(program, [program, *args])
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
