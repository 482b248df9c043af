"""The sdod task group, shared by the on-demand and the scheduled DAGs.

ingest -> check annotations -> pack RecordIO -> train -> evaluate -> publish. Each task
reads its inputs, calls one `sdod.stages` function and returns a small JSON-able result
(paths, counts, metrics); heavy libraries are imported inside the tasks, never at parse
time. Job folders live under the work directory (a volume shared by the workers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, Param, TaskGroup, task
from sdod_operators import SSDTrainingOperator, s3_options_from_connection

PROJECT = Path(__file__).resolve().parents[1]  # plugins/ sits in the project root
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

MODEL_ASSET = Asset(name="sdod_model")  # name only: a URI makes Airflow load every provider
AWS_CONN_ID = "aws_default"
TRAIN_QUEUE = os.environ.get("SDOD_TRAIN_QUEUE", "default")  # "gpu" in docker-compose


JOB_NAME_PATTERN = "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"


def pipeline_params(
    *, job_name: str, data_uri: str, output_uri: str, max_runtime_seconds: int
) -> dict[str, Param]:
    """The trigger form both DAGs share (JSON-schema validated by Airflow)."""
    return {
        "job_name": Param(
            job_name, type="string", pattern=JOB_NAME_PATTERN, description="TrainingJobName"
        ),
        "data_uri": Param(
            data_uri,
            type="string",
            description="s3://bucket/prefix or a folder with the four image-format channels",
        ),
        "content_type": Param(
            "image/jpeg", enum=["image/jpeg", "image/png", "application/x-image"]
        ),
        "output_uri": Param(output_uri, type="string", description="S3OutputPath"),
        "hyperparameters": Param(
            DEMO_HYPERPARAMETERS,
            type="object",
            description="SageMaker hyperparameters (strings), validated before ingest",
        ),
        "max_runtime_seconds": Param(
            max_runtime_seconds,
            type="integer",
            minimum=1,
            description="StoppingCondition.MaxRuntimeInSeconds",
        ),
        "check_policy": Param(
            "fail",
            enum=["fail", "quarantine"],
            description="annotation gate: stop, or drop bad images",
        ),
        "max_bad_fraction": Param(
            0.1, type="number", minimum=0, maximum=1, description="quarantine at most this share"
        ),
        "grayscale_policy": Param(
            "convert",
            enum=["convert", "reject"],
            description="non-RGB images: warn and convert when training, or treat as errors",
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
    }


def _user_errors_fail_fast(fn: Any) -> Any:
    """Bad data or config fails the task at once: retrying cannot fix it."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        from sdod.errors import UserError

        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise AirflowFailException(str(exc)) from None

    return wrapper


@task
@_user_errors_fail_fast
def build_spec(work_dir: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    from sdod.config import spec_from_form

    p = params or {}
    return spec_from_form(
        job_name=p["job_name"],
        data_uri=p["data_uri"],
        output_uri=p["output_uri"],
        hyperparameters=p["hyperparameters"],
        max_runtime_seconds=p["max_runtime_seconds"],
        content_type=p.get("content_type", "image/jpeg"),
    )


@task
@_user_errors_fail_fast
def ingest(spec: dict[str, Any], work_dir: str) -> dict[str, Any]:
    from sdod import stages

    root = f"{work_dir}/prepare/{spec['TrainingJobName']}"
    return stages.ingest(
        job_spec=spec, job_root=root, s3=s3_options_from_connection(AWS_CONN_ID)
    ).to_dict()


@task
@_user_errors_fail_fast
def check_annotations(
    ingested: dict[str, Any], params: dict[str, Any] | None = None
) -> dict[str, Any]:
    from sdod import stages

    p = params or {}
    return stages.check(
        job_root=ingested["job_root"],
        policy=p.get("check_policy", "fail"),
        max_bad_fraction=float(p.get("max_bad_fraction", 0.1)),
        grayscale=p.get("grayscale_policy", "convert"),
    ).to_dict()


@task
@_user_errors_fail_fast
def pack_recordio(checked: dict[str, Any]) -> dict[str, Any]:
    from sdod import stages

    return stages.pack_job(job_root=checked["job_root"]).to_dict()


@task
@_user_errors_fail_fast
def evaluate(trained: dict[str, Any], packed: dict[str, Any]) -> dict[str, Any]:
    from sdod import stages

    rec = packed["rec_files"].get("validation") or packed["rec_files"]["train"]
    return stages.evaluate(
        model=trained["model"], rec=rec, out=f"{trained['job_root']}/evaluation"
    ).to_dict()


@task(outlets=[MODEL_ASSET])
@_user_errors_fail_fast
def publish(
    spec: dict[str, Any],
    trained: dict[str, Any],
    evaluated: dict[str, Any],
    params: dict[str, Any] | None = None,
    outlet_events: Any = None,
) -> dict[str, Any]:
    from sdod import stages

    p = params or {}
    to = f"{spec['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{spec['TrainingJobName']}/output/"
    result = stages.publish(
        model=trained["model"],
        to=to,
        min_map=p.get("min_map"),
        force=bool(p.get("force_publish")),
        s3=s3_options_from_connection(AWS_CONN_ID),
    ).to_dict()
    if outlet_events is not None:
        outlet_events[MODEL_ASSET].extra = {
            "uri": result["uri"],
            "mAP": result["mAP"],
            "job": spec["TrainingJobName"],
        }
    return {**result, "evaluation": evaluated}


def sdod_pipeline(work_dir: str, group_id: str = "sdod") -> TaskGroup:
    """The six stages as one task group (used by `sdod_train` and `sdod_retrain`)."""
    with TaskGroup(group_id=group_id) as group:
        spec = build_spec(work_dir)
        ingested = ingest(spec, work_dir)
        packed = pack_recordio(check_annotations(ingested))
        train = SSDTrainingOperator(
            task_id="train",
            config=packed["train_spec"],
            job_root_base=f"{work_dir}/train",
            aws_conn_id=AWS_CONN_ID,
            queue=TRAIN_QUEUE,
            retries=2,
        )
        evaluated = evaluate(train.output, packed)
        publish(spec, train.output, evaluated)
    return group
