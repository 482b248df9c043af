"""The sdod task group, shared by the on-demand and the scheduled DAGs.

ingest -> check annotations -> pack RecordIO -> train -> evaluate -> publish. Each task
reads its inputs from the object store, calls one `sdod.stages` function, writes its
output back there and returns a small JSON-able result (URIs, counts, metrics): workers
share no disk, so any task may run on any worker (`sdod.workspace` says where each
stage's output lands). Heavy libraries are imported inside the tasks, never at parse time.
Each task also reports what it read and wrote for OpenLineage (`sdod_lineage`).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, Param, TaskGroup, task
from sdod_lineage import (
    check_lineage,
    evaluate_lineage,
    ingest_lineage,
    pack_lineage,
    publish_lineage,
    report,
)
from sdod_operators import SSDTrainingOperator, s3_options_from_connection

from sdod.checks.policy import DEFAULT as CHECKS
from sdod.checks.policy import FORM_SCHEMA as CHECK_SCHEMA
from sdod.demo.recipe import DEMO_HYPERPARAMETERS  # the embedded defaults (sample data, CPU)
from sdod.jobspec import JOB_NAME
from sdod.settings import SiteSettings

SITE = SiteSettings.from_env()  # the SDOD_* variables, each with its one default
# the work location (s3://bucket/prefix in production; a folder in the embedded default)
WORK_URI = SITE.work_uri
REGISTRY_URI = SITE.model_registry_uri


MODEL_ASSET = Asset(name="sdod_model")  # name only: a URI makes Airflow load every provider
AWS_CONN_ID = "aws_default"
TRAIN_QUEUE = SITE.train_queue  # "gpu" in docker-compose


JOB_NAME_PATTERN = f"^{JOB_NAME.pattern}$"  # a JSON schema pattern matches anywhere: anchored


def pipeline_params(
    *,
    job_name: str,
    data_uri: str,
    output_uri: str,
    max_runtime_seconds: int,
    work_uri: str = WORK_URI,
    model_registry_uri: str = REGISTRY_URI,
) -> dict[str, Param]:
    """The trigger form both DAGs share (JSON-schema validated by Airflow)."""
    return {
        **_job_params(job_name, data_uri, output_uri),
        **_location_params(work_uri, model_registry_uri),
        **_training_params(max_runtime_seconds),
        **_gate_params(),
        "training_job_request": Param(
            None,
            type=["null", "object"],
            description="instead of data_uri, content_type, output_uri, hyperparameters and "
            "max_runtime_seconds: the whole CreateTrainingJob request you send to SageMaker "
            "(RecordIO, augmented manifest, Pipe mode, ...), checked as `sdod validate-job` "
            "checks it; TrainingJobName defaults to job_name",
        ),
    }


def _job_params(job_name: str, data_uri: str, output_uri: str) -> dict[str, Param]:
    """The form's job: its name, its data and where the model goes."""
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
    }


def _location_params(work_uri: str, model_registry_uri: str) -> dict[str, Param]:
    """Where the tasks hand over and where the model is registered."""
    return {
        "work_uri": Param(
            work_uri,
            type="string",
            minLength=1,
            description="where the tasks hand over (snapshot, RecordIO, checkpoints): "
            "s3://bucket/prefix, or a folder when everything runs on one machine",
        ),
        "model_registry_uri": Param(
            model_registry_uri,
            type="string",
            minLength=1,
            description="model registry: versions land in <registry>/<model_group>/v<N>/",
        ),
        "model_group": Param(
            None,
            type=["null", "string"],
            pattern=JOB_NAME_PATTERN,
            description="model package group (empty: the job_name)",
        ),
    }


def _training_params(max_runtime_seconds: int) -> dict[str, Param]:
    """The training job's hyperparameters and its StoppingCondition."""
    return {
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
    }


def _gate_params() -> dict[str, Param]:
    """The two gates: the annotation check before packing, the mAP before publishing."""
    return {
        "check_policy": Param(
            CHECKS.policy,
            **CHECK_SCHEMA["policy"],
            description="annotation gate: stop, or drop bad images",
        ),
        "max_bad_fraction": Param(
            CHECKS.max_bad_fraction,
            **CHECK_SCHEMA["max_bad_fraction"],
            description="quarantine at most this share (below 1)",
        ),
        "grayscale_policy": Param(
            CHECKS.grayscale,
            **CHECK_SCHEMA["grayscale"],
            description="non-RGB images: warn and convert when training, or treat as errors",
        ),
        "min_map": Param(
            0.5,
            type="number",
            minimum=0,
            maximum=1,
            description="publish only when the evaluation's mAP is at least this",
        ),
        "force_publish": Param(
            False,
            type="boolean",
            description="publish even below the latest approved version's mAP",
        ),
    }


def user_errors_fail_fast(fn: Any) -> Any:
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
@user_errors_fail_fast
def build_spec(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The CreateTrainingJob request from the form, checked as `sdod validate-job` checks
    it (the task fails listing every problem)."""
    from sdod import stages
    from sdod.jobspec.form import form_request

    p = params or {}
    request = p.get("training_job_request")
    if request:
        spec = {"TrainingJobName": p["job_name"], **request}
        stages.validate_job(job_spec=spec)
        return spec
    spec = form_request(
        job_name=p["job_name"],
        data_uri=p["data_uri"],
        output_uri=p["output_uri"],
        hyperparameters=p["hyperparameters"],
        max_runtime_seconds=p["max_runtime_seconds"],
        content_type=p.get("content_type", "image/jpeg"),
    )
    stages.validate_job(job_spec=spec)
    return spec


@task
@user_errors_fail_fast
def ingest(
    spec: dict[str, Any], params: dict[str, Any] | None = None, run_id: str | None = None
) -> dict[str, Any]:
    from sdod import stages

    result = stages.ingest(
        job_spec=spec,
        work_uri=(params or {}).get("work_uri") or WORK_URI,
        run_id=run_id,
        s3=s3_options_from_connection(AWS_CONN_ID),
    ).to_dict()
    report(ingest_lineage, result)
    return result


@task
@user_errors_fail_fast
def check_annotations(
    ingested: dict[str, Any], params: dict[str, Any] | None = None
) -> dict[str, Any]:
    from sdod import stages

    p = params or {}
    result = stages.check(
        job_spec=ingested["spec"],
        policy=p.get("check_policy", CHECKS.policy),
        max_bad_fraction=float(p.get("max_bad_fraction", CHECKS.max_bad_fraction)),
        grayscale=p.get("grayscale_policy", CHECKS.grayscale),
        s3=s3_options_from_connection(AWS_CONN_ID),
    ).to_dict()
    report(check_lineage, ingested, result)
    return result


@task
@user_errors_fail_fast
def pack_recordio(
    ingested: dict[str, Any], checked: dict[str, Any], params: dict[str, Any] | None = None
) -> dict[str, Any]:
    from sdod import stages

    result = stages.pack_job(
        job_spec=ingested["spec"],
        work_uri=(params or {}).get("work_uri") or WORK_URI,
        quarantine_uri=checked["quarantine_uri"],
        s3=s3_options_from_connection(AWS_CONN_ID),
    ).to_dict()
    report(pack_lineage, ingested, checked, result)
    return result


@task
@user_errors_fail_fast
def evaluate(trained: dict[str, Any], packed: dict[str, Any]) -> dict[str, Any]:
    from sdod import stages
    from sdod.workspace import output_uris

    spec = stages.parse_spec(packed["train_spec"])
    rec = packed["rec_files"].get("validation") or packed["rec_files"]["train"]
    result = stages.evaluate(
        model=trained["model"],
        rec=rec,
        out=output_uris(spec, trained["job_name"]).evaluation,
        training_job=trained["job_name"],
        s3=s3_options_from_connection(AWS_CONN_ID),
    ).to_dict()
    report(evaluate_lineage, trained, packed, result)
    return result


@task(outlets=[MODEL_ASSET])
@user_errors_fail_fast
def publish(
    ingested: dict[str, Any],
    trained: dict[str, Any],
    evaluated: dict[str, Any],
    params: dict[str, Any] | None = None,
    outlet_events: Any = None,
) -> dict[str, Any]:
    from sdod import stages
    from sdod.storage import join_uri

    p = params or {}
    group = p.get("model_group") or ingested["job_name"]
    result = stages.publish(
        model=trained["model"],
        to=join_uri(p.get("model_registry_uri") or REGISTRY_URI, group),
        evaluation=evaluated["metrics_file"],
        min_map=p.get("min_map"),
        force=bool(p.get("force_publish")),
        training_job=trained["job_name"],
        data={n: c["source"] for n, c in ingested["channels"].items()},
        s3=s3_options_from_connection(AWS_CONN_ID),
    ).to_dict()
    report(publish_lineage, trained, evaluated, result)
    if outlet_events is not None:
        outlet_events[MODEL_ASSET].extra = {
            "uri": result["uri"],
            "version": result["version"],
            "mAP": result["mAP"],
            "job": trained["job_name"],
        }
    return result


def sdod_pipeline(group_id: str = "sdod") -> TaskGroup:
    """The six stages as one task group (used by `sdod_train` and `sdod_retrain`)."""
    with TaskGroup(group_id=group_id) as group:
        ingested = ingest(build_spec())
        packed = pack_recordio(ingested, check_annotations(ingested))
        train = SSDTrainingOperator(
            task_id="train",
            config=packed["train_spec"],
            aws_conn_id=AWS_CONN_ID,
            queue=TRAIN_QUEUE,
            retries=2,
        )
        evaluated = evaluate(train.output, packed)
        publish(ingested, train.output, evaluated)
    return group
