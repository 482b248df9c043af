"""The pipeline's front door: one function per stage, called by the CLI and the DAGs.

ingest -> check -> pack -> train -> evaluate -> publish: typed keyword arguments in, a small
JSON-able result out, URIs read and written (where each output lands: `sdod.workspace`);
the machinery is imported inside (importing this is cheap)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdod.checks.policy import DEFAULT
from sdod.errors import UserError
from sdod.jobspec.parse import checked_spec, parse_spec

if TYPE_CHECKING:
    from sdod.checks.gate import CheckReport
    from sdod.checks.job import CheckResult
    from sdod.data.convert import ConvertResult
    from sdod.data.ingest import IngestResult
    from sdod.data.pack import PackResult
    from sdod.data.packjob import PackJobResult
    from sdod.evaluate.run import EvaluateResult
    from sdod.jobspec import TrainingJobSpec
    from sdod.registry import PublishResult
    from sdod.storage import S3Options
    from sdod.train.job import JobOutcome
    from sdod.train.stopping import StopFlag


def validate_job(*, job_spec: str | dict[str, Any]) -> TrainingJobSpec:
    """Check a CreateTrainingJob request (a JSON file or a dict) without running it:
    UserError listing every problem, else the spec (the CLI prints what sdod will do)."""
    return checked_spec(job_spec)


def ingest(
    *, job_spec: str | dict[str, Any] | TrainingJobSpec, job_root: str | None = None,
    work_uri: str | None = None, run_id: str | None = None, s3: S3Options | None = None,
    workers: int = 8,
) -> IngestResult:  # fmt: skip
    """Bring each File-mode channel to where the job reads it: a local job folder
    (`job_root`, SageMaker's container layout) or a snapshot at `<work_uri>/<job>/input/`
    (the result's `spec` reads it; `run_id` claims the work area for one run). Streamed
    channels are not copied. A re-run transfers only what changed."""
    from sdod.data import ingest as ingesting

    spec = parse_spec(job_spec)
    if (job_root is None) == (work_uri is None):
        raise UserError("give exactly one of job_root (a local folder) and work_uri")
    if job_root is not None:
        return ingesting.to_job_root(spec, job_root, s3=s3, workers=workers)
    assert work_uri is not None
    return ingesting.to_work(spec, work_uri, run_id=run_id, s3=s3, workers=workers)


def validate(*, num_classes: int, **options: Any) -> CheckReport:
    """The annotation suite on one dataset given by paths (the CLI's `validate`): keyword
    options as `sdod.checks.gate.validate_inputs` (images/annotations, manifest or rec,
    label_width, policy, max_bad_fraction, report, grayscale, max_class_ratio, …)."""
    from sdod.checks.gate import validate_inputs

    return validate_inputs(num_classes=num_classes, **options)


def check(
    *, job_spec: str | dict[str, Any], report_uri: str | None = None,
    policy: str = DEFAULT.policy, max_bad_fraction: float = DEFAULT.max_bad_fraction,
    grayscale: str = DEFAULT.grayscale, max_class_ratio: float = DEFAULT.max_class_ratio,
    s3: S3Options | None = None,
) -> CheckResult:  # fmt: skip
    """The annotation gate (Great Expectations) on a job's train and validation channels.

    Uploads `report.json`, `quarantine.json` and `data_docs/` to `report_uri` (default
    `<S3OutputPath>/<job>/check/`); with policy `quarantine` the list names the images
    packing drops. Raises UserError with the summary when the gate fails.
    """
    from sdod.checks.job import check_job
    from sdod.workspace import output_uris, task_cache

    spec = parse_spec(job_spec)
    return check_job(
        spec, report_uri=report_uri or output_uris(spec).check,
        cache=task_cache(spec.name, "channels"), policy=policy,
        max_bad_fraction=max_bad_fraction, grayscale=grayscale, max_class_ratio=max_class_ratio,
        s3=s3,
    )  # fmt: skip


def pack(*, out: str, **inputs: Any) -> PackResult:
    """Pack a dataset into MXNet RecordIO `out.rec/.idx/.lst` (im2rec's detection layout);
    inputs as `sdod.data.pack.pack_inputs`."""
    from sdod.data.pack import pack_inputs

    return pack_inputs(out=out, **inputs)


def pack_job(
    *, job_spec: str | dict[str, Any], work_uri: str, quarantine_uri: str | None = None,
    workers: int = 1, s3: S3Options | None = None,
) -> PackJobResult:  # fmt: skip
    """Pack a job's channels (less what the check quarantined) into RecordIO at
    `<work_uri>/<job>/packed/<channel>/`; the derived request trains from there."""
    from sdod.checks.quarantine import read_quarantine
    from sdod.data.packjob import pack_job as run
    from sdod.storage import join_uri
    from sdod.workspace import JobURIs, task_cache

    spec = parse_spec(job_spec)
    uris = JobURIs.of(spec, work_uri)
    return run(
        spec, out_uri=join_uri(uris.work, "packed"), cache=task_cache(spec.name, "channels"),
        quarantine=read_quarantine(quarantine_uri, s3=s3), checkpoint_uri=uris.checkpoints,
        workers=workers, s3=s3,
    )  # fmt: skip


def convert(*, to: str, out: str, **inputs: Any) -> ConvertResult:
    """Any supported input into one of SageMaker's training formats."""
    from sdod.data.convert import convert_inputs

    return convert_inputs(to=to, out=out, **inputs)


def train(
    *,
    job_root: str | None = None,
    job_spec: str | dict[str, Any] | None = None,
    s3: S3Options | None = None,
    log: Callable[[str], None] = print,
    stop: StopFlag | None = None,
    nproc_per_node: int | None = None,
    rdzv_endpoint: str | None = None,
) -> JobOutcome:
    """A training job from a job root made by `ingest`, a spec (ingested into `job_root`,
    default `./jobs/<name>`) or, with neither, the SageMaker container's `/opt/ml`."""
    from sdod.train.job import job_root_spec, train_job
    from sdod.train.names import claimed

    spec = parse_spec(job_spec) if job_spec is not None else None
    if spec is not None:
        job_root = job_root or str(Path("jobs") / spec.name)
    elif job_root is None:  # inside a SageMaker training container (sdod.container)
        from sdod.container import container_job

        job_root, spec, rdzv_endpoint = container_job()
    spec = spec or job_root_spec(job_root)
    with claimed(spec, new=job_spec is not None, job_root=job_root, s3=s3) as named:
        if job_spec is not None:
            ingest(job_spec=named, job_root=job_root, s3=s3)
        return train_job(job_root, log=log, stop=stop, nproc_per_node=nproc_per_node,
                         rdzv_endpoint=rdzv_endpoint, spec=named)  # fmt: skip


def evaluate(*, model: str, **options: Any) -> EvaluateResult:
    """Detections of `model` (a file, an object URI or a registry version) on a dataset,
    then mAP per class: VOC (GluonCV semantics) at `overlap_threshold` (default: the
    model's hyperparameter), or COCO's AP .50:.95. With `out` (a folder or prefix):
    `metrics.json`, `per_class_ap.csv`, `pr_curves/*.png`, `examples/*.png`. Options as
    `sdod.evaluate.run.evaluate` (images/annotations, manifest or rec; metric, out, …)."""
    from sdod.evaluate.run import evaluate as run

    return run(model=model, **options)


def publish(
    *, model: str, to: str, evaluation: str | None = None, min_map: float | None = None,
    force: bool = False, training_job: str | None = None, data: dict[str, str] | None = None,
    s3: S3Options | None = None,
) -> PublishResult:  # fmt: skip
    """The gated promotion: `model` becomes version N+1 of the model group `to`
    (`<registry>/<group>`) when the evaluation's mAP (`evaluation`: its metrics.json) is
    at least `min_map` and not below the latest approved version (unless `force`).
    `approval.json` is written last; a refusal raises UserError and writes nothing."""
    from sdod.registry import publish as promote

    return promote(
        model=model, group=to, evaluation=evaluation, min_map=min_map, force=force,
        training_job=training_job, data=data, s3=s3,
    )  # fmt: skip


def resolve_model(uri: str, *, s3: S3Options | None = None) -> Path:
    """A local model.tar.gz for a file, an object URI, a registry version or group."""
    from sdod.registry import resolve_model as resolve

    return resolve(uri, s3=s3)


def export_onnx(*, model: str, out: str | None = None) -> dict[str, Any]:
    """Add `model.onnx` to a model.tar.gz (in place, or as a new archive `out`)."""
    from sdod.serve.onnx import add_onnx

    return add_onnx(model, out)


def import_gluoncv(*, params: str, network: str, out: str, **options: Any) -> dict[str, Any]:
    """A model.tar.gz from a GluonCV SSD's .params file (`classes`, `nms_threshold`)."""
    from sdod.model.gluoncv import import_gluoncv as run

    return run(params=params, network=network, out=out, **options)


def tune(
    *, tuning_spec: str | dict[str, Any], parallel: int = 1, work: str | None = None,
    storage: str | None = None, s3: S3Options | None = None, log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """A tuning job from a CreateHyperParameterTuningJob request (path or dict), `parallel`
    trials at a time here; its DescribeHyperParameterTuningJob summary (also written to
    `<S3OutputPath>/<tuning-job>/`). The DAG runs it in the three steps below."""
    from sdod.tune.steps import read_tuning_request, run_tuning

    spec = read_tuning_request(tuning_spec)
    return run_tuning(spec, parallel=parallel, work=work, storage=storage, s3=s3, log=log)


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


def layers(*, base_network: str, image_shape: int = 300, pattern: str | None = None) -> list[str]:
    """The layer names of a network that `freeze_layer_pattern` matches (all without one)."""
    from sdod.model.ssd import layer_names

    return layer_names(base_network, image_shape, pattern)
