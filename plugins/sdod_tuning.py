"""The sdod_tune task group: SageMaker's automatic model tuning, spread over the workers.

build -> ingest -> check -> pack (the data is prepared once) -> prepare the study ->
one lane per `MaxParallelTrainingJobs` (mapped tasks on the training queue; each runs
trials one after another, asking the shared study for hyperparameters as it starts one,
so later trials learn from earlier ones) -> summary -> evaluate the best -> publish gate.
The study lives in `SDOD_TUNING_STORAGE` (the cluster's PostgreSQL; SQLite under the
state folder on one machine); the trials' models land in `S3OutputPath/<trial>/output/`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, TaskGroup, task
from sdod_operators import s3_options_from_connection
from sdod_pipeline import (
    AWS_CONN_ID,
    CHECK_SCHEMA,
    CHECKS,
    REGISTRY_URI,
    SITE,
    TRAIN_QUEUE,
    WORK_URI,
    check_annotations,
    evaluate,
    ingest,
    pack_recordio,
    publish,
    user_errors_fail_fast,
)


def demo_tuning_request(data_uri: str, output_uri: str) -> dict[str, Any]:
    """The embedded default: 4 trials, 2 at a time, over the demo's learning rate and
    optimizer, a few CPU epochs each."""
    channels = ("train", "validation", "train_annotation", "validation_annotation")
    return {
        "HyperParameterTuningJobName": "sdod-tune-demo",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {
                "Type": "Maximize", "MetricName": "validation:mAP"
            },
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {"Name": "learning_rate", "MinValue": "0.0005", "MaxValue": "0.005",
                     "ScalingType": "Logarithmic"}
                ],
                "CategoricalParameterRanges": [
                    {"Name": "optimizer", "Values": ["adam", "rmsprop"]}
                ],
            },
            "TrainingJobEarlyStoppingType": "Auto",
            "RandomSeed": 1,
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {
                "base_network": "resnet-lite", "use_pretrained_model": "0", "num_classes": "3",
                "num_training_samples": "960", "epochs": "3", "mini_batch_size": "8",
                "augmentation": "light", "image_shape": "300",
            },
            "AlgorithmSpecification": {"TrainingImage": "sdod", "TrainingInputMode": "File"},
            "InputDataConfig": [
                {"ChannelName": c, "ContentType": "image/jpeg",
                 "DataSource": {"S3DataSource": {"S3Uri": f"{data_uri.rstrip('/')}/{c}/"}}}
                for c in channels
            ],
            "OutputDataConfig": {"S3OutputPath": output_uri},
            "ResourceConfig": {
                "InstanceType": "ml.p3.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
        },
    }  # fmt: skip


def tuning_params() -> dict[str, Param]:
    return {
        "tuning_job_request": Param(
            demo_tuning_request(SITE.demo_data_uri, str(SITE.state_dir / "tune" / "output")),
            type="object",
            description="the CreateHyperParameterTuningJob request you send to SageMaker, "
            "checked as `sdod validate-tuning-job` checks it",
        ),
        "work_uri": Param(
            WORK_URI, type="string", minLength=1, description="where tasks hand over"
        ),
        "model_registry_uri": Param(REGISTRY_URI, type="string", minLength=1),
        "model_group": Param(None, type=["null", "string"], description="(the tuning job's name)"),
        "min_map": Param(0.5, type="number", minimum=0, maximum=1, description="publish gate"),
        "force_publish": Param(False, type="boolean"),
        "check_policy": Param(CHECKS.policy, **CHECK_SCHEMA["policy"]),
    }


@task
@user_errors_fail_fast
def build_tuning(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The tuning request, checked; and a training request for preparing its data."""
    from sdod.tune.spec import parse_tuning_request

    spec = parse_tuning_request((params or {})["tuning_job_request"])
    return {"tuning": spec.raw, "train_spec": spec.example_request()}


@task
@user_errors_fail_fast
def prepare_study(built: dict[str, Any], packed: dict[str, Any]) -> dict[str, Any]:
    """The trials train from the packed RecordIO; the study gets its warm start."""
    from sdod import stages

    prepared = stages.prepare_tuning(
        tuning_spec=built["tuning"], train_spec=packed["train_spec"],
        s3=s3_options_from_connection(AWS_CONN_ID),
    )  # fmt: skip
    return {"tuning": prepared["tuning"], "lanes": prepared["lanes"]}


@task
def lanes(prepared: dict[str, Any]) -> list[int]:
    """One lane per MaxParallelTrainingJobs (what the mapped trial tasks expand over)."""
    return list(prepared["lanes"])


@task(queue=TRAIN_QUEUE, retries=2)
@user_errors_fail_fast
def trial_lane(prepared: dict[str, Any], lane: int) -> dict[str, Any]:
    """Trials one after another from the shared study until the tuning job is done."""
    from sdod import stages
    from sdod.workspace import task_cache

    name = prepared["tuning"]["HyperParameterTuningJobName"]
    stages.tuning_lane(
        tuning_spec=prepared["tuning"], lane=lane, work=str(task_cache(name, "trials")),
        s3=s3_options_from_connection(AWS_CONN_ID),
    )  # fmt: skip
    return {"lane": lane}


@task
@user_errors_fail_fast
def summarize(prepared: dict[str, Any]) -> dict[str, Any]:
    """DescribeHyperParameterTuningJob to `<S3OutputPath>/<tuning-job>/`; the best trial."""
    from sdod import stages
    from sdod.errors import UserError

    summary = stages.tuning_summary(
        tuning_spec=prepared["tuning"], s3=s3_options_from_connection(AWS_CONN_ID)
    )
    best = summary.get("BestTrainingJob")
    if best is None or "ModelArtifacts" not in best:
        raise UserError(f"tuning job {summary['HyperParameterTuningJobName']}: no trial succeeded")
    return {
        "job_name": best["TrainingJobName"],
        "model": best["ModelArtifacts"]["S3ModelArtifacts"],
        "objective": best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
        "counters": summary["TrainingJobStatusCounters"],
        "describe": summary.get("OutputUri"),
    }


def sdod_tuning(group_id: str = "tune") -> TaskGroup:
    with TaskGroup(group_id=group_id) as group:
        built = build_tuning()
        ingested = ingest(built["train_spec"])
        packed = pack_recordio(ingested, check_annotations(ingested))
        prepared = prepare_study(built, packed)
        ran = trial_lane.partial(prepared=prepared).expand(lane=lanes(prepared))
        best = summarize(prepared)
        ran >> best
        evaluated = evaluate(best, packed)
        publish(ingested, best, evaluated)
    return group
