"""The pipeline's front door: its six stages, called by the CLI and the DAGs.

ingest -> check -> pack -> train -> evaluate -> publish: typed keyword arguments in, a small
JSON-able result out, URIs read and written (where each output lands: `sdod.workspace`).
Each stage's room is its module in `sdod.pipeline`, imported inside (importing this is
cheap). The tools beside the pipeline (validate, pack, convert, ...) are `sdod.tools`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sdod.checks.policy import DEFAULT
from sdod.jobspec.parse import checked_spec, parse_spec

if TYPE_CHECKING:
    from sdod.evaluate.run import EvaluateResult
    from sdod.jobspec import TrainingJobSpec
    from sdod.pipeline.check import CheckResult
    from sdod.pipeline.ingest import IngestResult
    from sdod.pipeline.pack import PackJobResult
    from sdod.registry import PublishResult
    from sdod.storage import S3Options
    from sdod.train.job import JobOutcome
    from sdod.train.stopping import StopFlag

Spec = str | dict[str, Any]


def validate_job(*, job_spec: Spec) -> TrainingJobSpec:
    """Check a CreateTrainingJob request (a JSON file or a dict) without running it:
    UserError listing every problem, else the spec (the CLI prints what sdod will do)."""
    return checked_spec(job_spec)


def ingest(
    *,
    job_spec: Spec | TrainingJobSpec,
    job_root: str | None = None,
    work_uri: str | None = None,
    run_id: str | None = None,
    s3: S3Options | None = None,
    workers: int = 8,
) -> IngestResult:
    """Bring each File-mode channel to where the job reads it: a local job folder
    (`job_root`, SageMaker's container layout) or a snapshot at `<work_uri>/<job>/input/`
    (the result's `spec` reads it; `run_id` claims the work area for one run). Streamed
    channels are not copied. A re-run transfers only what changed."""
    from sdod.pipeline.ingest import ingest as run

    spec = parse_spec(job_spec)
    return run(spec, job_root=job_root, work_uri=work_uri, run_id=run_id, s3=s3, workers=workers)


def check(
    *,
    job_spec: Spec,
    report_uri: str | None = None,
    policy: str = DEFAULT.policy,
    max_bad_fraction: float = DEFAULT.max_bad_fraction,
    grayscale: str = DEFAULT.grayscale,
    max_class_ratio: float = DEFAULT.max_class_ratio,
    s3: S3Options | None = None,
) -> CheckResult:
    """The annotation gate (Great Expectations) on a job's train and validation channels.

    Uploads `report.json`, `quarantine.json`, `data_docs/` and the clean set pack reads
    (`checked/<channel>.json`) to `report_uri` (default `<S3OutputPath>/<job>/check/`).
    Raises UserError with the summary when the gate fails.
    """
    from sdod.pipeline.check import check_job
    from sdod.workspace import output_uris, task_cache

    spec = parse_spec(job_spec)
    return check_job(
        spec,
        report_uri=report_uri or output_uris(spec).check,
        cache=task_cache(spec.name, "channels"),
        policy=policy,
        max_bad_fraction=max_bad_fraction,
        grayscale=grayscale,
        max_class_ratio=max_class_ratio,
        s3=s3,
    )


def pack_job(
    *,
    job_spec: Spec,
    work_uri: str,
    quarantine_uri: str | None = None,
    workers: int = 1,
    s3: S3Options | None = None,
) -> PackJobResult:
    """Pack a job's channels (the clean set of the check that wrote `quarantine_uri`) into
    RecordIO at `<work_uri>/<job>/packed/<channel>/`; the derived request trains from there."""
    from sdod.pipeline.pack import pack_job as run
    from sdod.storage import join_uri
    from sdod.workspace import JobURIs, task_cache

    spec = parse_spec(job_spec)
    uris = JobURIs.of(spec, work_uri)
    return run(
        spec,
        out_uri=join_uri(uris.work, "packed"),
        cache=task_cache(spec.name, "channels"),
        quarantine_uri=quarantine_uri,
        checkpoint_uri=uris.checkpoints,
        workers=workers,
        s3=s3,
    )


def train(
    *,
    job_root: str | None = None,
    job_spec: Spec | None = None,
    s3: S3Options | None = None,
    log: Callable[[str], None] = print,
    stop: StopFlag | None = None,
    nproc_per_node: int | None = None,
    rdzv_endpoint: str | None = None,
) -> JobOutcome:
    """A training job from a job root made by `ingest`, a spec (ingested into `job_root`,
    default `./jobs/<name>`) or, with neither, the SageMaker container's `/opt/ml`."""
    from sdod.pipeline.train import train as run

    return run(
        job_root=job_root,
        spec=parse_spec(job_spec) if job_spec is not None else None,
        s3=s3,
        log=log,
        stop=stop,
        nproc_per_node=nproc_per_node,
        rdzv_endpoint=rdzv_endpoint,
    )


def evaluate(
    *,
    model: str,
    rec: str,
    out: str | None = None,
    metric: str = "voc07",
    overlap_threshold: float | None = None,
    training_job: str | None = None,
    s3: S3Options | None = None,
) -> EvaluateResult:
    """`model` (a file, an object URI or a registry version) on the packed `.rec` (a file
    or an object URI), then mAP per class: VOC at `overlap_threshold` (default: the model's
    hyperparameter) or COCO's AP .50:.95. With `out` (a folder or prefix): `metrics.json`,
    `per_class_ap.csv`, `pr_curves/*.png`, `examples/*.png`; with `training_job` too, they
    join that job's MLflow run when tracking is on."""
    from sdod.pipeline.evaluate import evaluate_model

    result = evaluate_model(
        model=model, rec=rec, out=out, metric=metric, overlap_threshold=overlap_threshold, s3=s3
    )
    if out and training_job:
        from sdod.tracking.evaluation import record_evaluation

        record_evaluation(training_job=training_job, out=out, mAP=result.mAP, s3=s3)
    return result


def publish(
    *,
    model: str,
    to: str,
    evaluation: str | None = None,
    min_map: float | None = None,
    force: bool = False,
    training_job: str | None = None,
    data: dict[str, str] | None = None,
    s3: S3Options | None = None,
) -> PublishResult:
    """The gated promotion: `model` becomes version N+1 of the model group `to`
    (`<registry>/<group>`) when the evaluation's mAP (`evaluation`: its metrics.json) is
    at least `min_map` and not below the latest approved version (unless `force`).
    `approval.json` is written last; a refusal raises UserError and writes nothing."""
    from sdod.pipeline.publish import publish as promote

    return promote(
        model=model,
        group=to,
        evaluation=evaluation,
        min_map=min_map,
        force=force,
        training_job=training_job,
        data=data,
        s3=s3,
    )


def prepare_tuning(
    *, tuning_spec: dict[str, Any], train_spec: dict[str, Any], s3: S3Options | None = None
) -> dict[str, Any]:
    """The DAG's first tuning step: the trials will read `train_spec`'s channels (the packed
    data), the study gets its warm start. Returns the request the lanes run and the lanes."""
    from sdod.tune import steps

    spec = steps.read_tuning_request(tuning_spec)
    return steps.prepare_tuning(spec, channels_from=parse_spec(train_spec), s3=s3)


def tuning_lane(
    *, tuning_spec: dict[str, Any], lane: int, work: str, s3: S3Options | None = None
) -> dict[str, Any]:
    """A prepared tuning job's lane `lane` (the DAG's mapped step): trials until it is done."""
    from sdod.tune.steps import read_tuning_request, run_lane

    return run_lane(read_tuning_request(tuning_spec), lane=lane, work=work, s3=s3)


def tuning_summary(*, tuning_spec: dict[str, Any], s3: S3Options | None = None) -> dict[str, Any]:
    """The DAG's last tuning step: the DescribeHyperParameterTuningJob summary, written."""
    from sdod.tune.steps import read_tuning_request, summarize_tuning

    return summarize_tuning(read_tuning_request(tuning_spec), s3=s3)
