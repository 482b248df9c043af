"""The pipeline's front door: one function per stage, called by the CLI and the DAGs.

ingest -> check -> pack -> train -> evaluate -> publish (DESIGN.md). Each takes typed
keyword arguments and returns a small JSON-able result; heavy machinery is imported
inside, so importing this module is cheap. Stages land here as they are built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdod.errors import UserError

if TYPE_CHECKING:
    from sdod.data.pack import PackResult
    from sdod.data.sampleset import SampleSet
    from sdod.storage import S3Options
    from sdod.train.job import JobOutcome
    from sdod.train.stopping import StopFlag


@dataclass(frozen=True)
class IngestResult:
    job_name: str
    job_root: str
    channels: dict[str, dict[str, Any]]
    pipe_channels: list[str] = field(default_factory=list)
    ignored_fields: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest(
    *, job_spec: str | dict[str, Any], job_root: str, s3: S3Options | None = None, workers: int = 8
) -> IngestResult:
    """Materialise each File-mode channel of a CreateTrainingJob spec under `job_root`.

    `job_spec` is a path to the JSON request or the dict itself. Channels go to
    `input/data/<channel>/`, the config files to `input/config/`. Pipe-mode channels are
    not downloaded (training streams them). A re-run transfers only what changed.
    """
    from sdod.config import load_job_spec, parse_job_spec
    from sdod.joblayout import JobLayout, write_config
    from sdod.storage import sync_to_local

    spec = parse_job_spec(job_spec) if isinstance(job_spec, dict) else load_job_spec(job_spec)
    layout = JobLayout(Path(job_root))
    write_config(layout, spec)
    channels, pipe = {}, []
    for channel in spec.channels:
        if channel.input_mode == "Pipe":
            pipe.append(channel.name)
            continue
        synced = sync_to_local(
            channel.uri, layout.channel_dir(channel.name), s3=s3, workers=workers
        )
        channels[channel.name] = synced.to_dict()
    return IngestResult(spec.name, str(layout.root), channels, pipe, list(spec.ignored_fields))


def load_samples(
    *, images: str | None = None, annotations: str | None = None, manifest: str | None = None
) -> tuple[SampleSet, Path | None]:
    """Samples from image+JSON channels or a manifest, and the folder their paths are under."""
    if manifest and (images or annotations):
        raise UserError("give either --manifest or --images/--annotations, not both")
    if manifest:
        from sdod.data.manifest import read_manifest

        sampleset = read_manifest(manifest)
        if any(s.image.startswith("s3://") for s in sampleset.samples):
            raise UserError(
                f"{manifest} refers to images on S3; ingest them first (`sdod ingest`) and "
                "point the manifest at the local copies"
            )
        return sampleset, Path(manifest).parent
    if not (images and annotations):
        raise UserError("give both --images and --annotations (or --manifest, or --lst/--root)")
    from sdod.data.imagejson import read_image_json

    return read_image_json(images, annotations), Path(images)


def pack(
    *,
    out: str,
    images: str | None = None,
    annotations: str | None = None,
    manifest: str | None = None,
    lst: str | None = None,
    root: str | None = None,
    resize: int = 0,
    quality: int = 95,
    workers: int = 1,
    shards: int = 1,
) -> PackResult:
    """Pack a dataset into MXNet RecordIO `out.rec/.idx/.lst` (im2rec's detection layout)."""
    from sdod.data import pack as packing

    if lst:
        if images or annotations or manifest:
            raise UserError("give --lst with --root only")
        if not root:
            raise UserError("--lst needs --root, the folder the .lst paths are relative to")
        items = packing.items_from_lst(lst, root)
    else:
        sampleset, base = load_samples(images=images, annotations=annotations, manifest=manifest)
        items = packing.items_from_samples(sampleset, base)
    options = packing.PackOptions(resize=resize, quality=quality)
    if shards > 1:
        parts = packing.pack_sharded(items, out, shards=shards, options=options, workers=workers)
        return packing.PackResult(
            rec=",".join(p.rec for p in parts),
            idx=",".join(p.idx for p in parts),
            lst=",".join(p.lst for p in parts),
            records=sum(p.records for p in parts),
            bytes=sum(p.bytes for p in parts),
            seconds=sum(p.seconds for p in parts),
        )
    return packing.pack(items, out, options=options, workers=workers)


def convert(
    *,
    to: str,
    out: str,
    channel: str = "train",
    images: str | None = None,
    annotations: str | None = None,
    manifest: str | None = None,
    rec: str | None = None,
    coco: str | None = None,
    voc: str | None = None,
) -> Any:
    """Read any supported input and write it in one of SageMaker's training formats."""
    from sdod.data.convert import convert as run

    if coco or voc:
        if not images:
            raise UserError("--coco/--voc need --images, the folder holding the image files")
        from sdod.data.importers import read_coco, read_voc

        sampleset = read_coco(coco, images) if coco else read_voc(voc, images)  # type: ignore[arg-type]
    elif rec:
        from sdod.data.recfile import read_rec

        sampleset = read_rec(rec)
    else:
        sampleset = load_samples(images=images, annotations=annotations, manifest=manifest)[0]
    return run(sampleset, to=to, out=out, channel=channel)


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
    """Run a training job: from a job root made by `ingest`, or from a spec (ingest first).

    With only `job_spec`, the job root is `./jobs/<TrainingJobName>`. The outcome says
    Completed, Stopped (StoppingCondition; the artifact is valid) or Failed.
    """
    from sdod.train.job import train_job

    if job_spec is not None:
        if job_root is None:
            from sdod.config import load_job_spec, parse_job_spec

            spec = (
                parse_job_spec(job_spec) if isinstance(job_spec, dict) else load_job_spec(job_spec)
            )
            job_root = str(Path("jobs") / spec.name)
        ingest(job_spec=job_spec, job_root=job_root, s3=s3)
    if job_root is None:
        raise UserError("give --job-root (a folder made by `sdod ingest`) or --job-spec")
    return train_job(
        job_root, log=log, stop=stop, nproc_per_node=nproc_per_node, rdzv_endpoint=rdzv_endpoint
    )


EVALUATE_METRICS = ("voc07", "voc", "coco")


@dataclass(frozen=True)
class EvaluateResult:
    metric: str
    overlap_threshold: float
    images: int
    mAP: float | None
    per_class: dict[str, float | None]
    metrics_file: str | None = None
    coco: dict[str, float | None] | None = None  # AP, AP50, AP75, by size, AR (metric coco)
    plots: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    *,
    model: str,
    images: str | None = None,
    annotations: str | None = None,
    manifest: str | None = None,
    rec: str | None = None,
    metric: str = "voc07",
    overlap_threshold: float | None = None,
    out: str | None = None,
    examples: int = 4,
) -> EvaluateResult:
    """Detections of `model` on a dataset, then mAP per class: VOC (GluonCV semantics) at
    `overlap_threshold`, or COCO's AP .50:.95 with AP50, AP75 and AP by object size.

    `overlap_threshold` defaults to the model's hyperparameter. With `out`: `metrics.json`,
    `per_class_ap.csv`, one precision-recall curve per class (`pr_curves/*.png`, VOC at
    `overlap_threshold`) and `examples` images with true and predicted boxes
    (`examples/*.png`).
    """
    import torch

    from sdod.evaluate.detect import detect, ground_truth
    from sdod.evaluate.report import write_files
    from sdod.evaluate.score import summary
    from sdod.evaluate.voc import voc_map
    from sdod.serve.predictor import Predictor
    from sdod.storage import atomic_write_json

    if metric not in EVALUATE_METRICS:
        raise UserError(f"--metric must be one of {', '.join(EVALUATE_METRICS)}, got {metric!r}")
    predictor = Predictor.load(model)
    if rec:
        from sdod.data.recfile import read_rec

        samples = read_rec(rec).samples
    else:
        samples = load_samples(images=images, annotations=annotations, manifest=manifest)[0].samples
    iou = overlap_threshold
    if iou is None:
        from sdod.artifact import read_artifact

        iou = float(read_artifact(model).hyperparams.get("overlap_threshold", 0.5))
    if not 0 < iou <= 1:
        raise UserError(f"--overlap-threshold must be in (0, 1], got {iou}")
    info = predictor.info
    det = detect(
        predictor.model, samples, device=torch.device("cpu"), nms_threshold=info.nms_threshold
    )
    assert det is not None
    gt = ground_truth(samples)
    names = info.class_names or [str(c) for c in range(info.num_classes)]
    voc_metric = metric if metric != "coco" else "voc07"
    voc = voc_map(det, gt, num_classes=info.num_classes, iou_threshold=iou, metric=voc_metric)
    s = summary(voc, names)
    coco = None
    if metric == "coco":
        from sdod.evaluate.coco import coco_map

        sizes = [(smp.width, smp.height) for smp in samples]
        result = coco_map(det, gt, sizes, info.num_classes)
        coco = result.stats
        s = {
            "metric": "coco",
            "iou_threshold": "0.50:0.95",
            "per_class": {names[c]: ap for c, ap in result.ap.items()},
            "mAP": result.map,
            "coco": coco,
        }
    path, plots = None, []
    if out:
        folder = Path(out)
        path = str(atomic_write_json(folder / "metrics.json", {**s, "images": len(samples)}))
        plots = write_files(folder, s["per_class"], voc, det, samples, names, examples)
    return EvaluateResult(metric, iou, len(samples), s["mAP"], s["per_class"], path, coco, plots)


@dataclass(frozen=True)
class PublishResult:
    published: bool
    uri: str
    mAP: float | None
    previous_mAP: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def publish(
    *,
    model: str,
    to: str,
    min_map: float | None = None,
    force: bool = False,
    s3: S3Options | None = None,
) -> PublishResult:
    """The gated upload: `model` goes to `to` (an object URI ending in .tar.gz, or a prefix
    that gets `model.tar.gz`) with `metrics.json` beside it, only if its validation mAP is
    at least `min_map` and not below the model already published there (unless `force`).
    Raises UserError when the gate refuses; nothing is written then.
    """
    import json
    import tempfile

    from sdod.artifact import read_artifact
    from sdod.storage import atomic_write_json, is_s3, local_path, s3_filesystem, upload_file

    artifact = read_artifact(model)  # validates before anything is uploaded
    score = artifact.metrics.get("validation:mAP")
    target = to if to.endswith(".tar.gz") else to.rstrip("/") + "/model.tar.gz"
    metrics_uri = (
        target[: -len("model.tar.gz")] + "metrics.json"
        if target.endswith("/model.tar.gz")
        else target + ".metrics.json"
    )
    if min_map is not None and (score is None or score < min_map):
        raise UserError(f"validation mAP {score} is below --min-map {min_map}; nothing published")
    previous = None
    try:
        if is_s3(metrics_uri):
            with s3_filesystem(s3).open(metrics_uri[len("s3://") :], "rb") as f:
                previous = json.load(f).get("validation:mAP")
        elif local_path(metrics_uri).is_file():
            previous = json.loads(local_path(metrics_uri).read_text()).get("validation:mAP")
    except FileNotFoundError:
        previous = None
    if previous is not None and score is not None and score < previous and not force:
        raise UserError(
            f"validation mAP {score} is below the published model's {previous} at {target}; "
            "nothing published (use --force to replace it anyway)"
        )
    upload_file(model, target, s3=s3)
    with tempfile.TemporaryDirectory() as tmp:
        atomic_write_json(Path(tmp) / "metrics.json", artifact.metrics)
        upload_file(Path(tmp) / "metrics.json", metrics_uri, s3=s3)
    return PublishResult(True, target, score, previous, "published")


def validate(
    *,
    num_classes: int,
    images: str | None = None,
    annotations: str | None = None,
    manifest: str | None = None,
    rec: str | None = None,
    label_width: int = 350,
    policy: str = "fail",
    max_bad_fraction: float = 0.1,
    report: str | None = None,
    workers: int = 2,
    grayscale: str = "convert",
    max_class_ratio: float = 10.0,
    gx_project: str | None = None,
) -> Any:
    """Run the annotation suite on one dataset (the CLI's `validate`)."""
    from sdod.checks.gate import run_checks

    # non-strict readers: the gate reports (or quarantines) every bad record with the rest
    if rec:
        from sdod.data.recfile import read_rec

        data = read_rec(rec, strict=False)
    elif manifest:
        from sdod.data.manifest import read_manifest

        data = read_manifest(manifest, strict=False)
    elif images and annotations:
        from sdod.data.imagejson import read_image_json

        data = read_image_json(images, annotations, strict=False)
    else:
        data = load_samples(images=images, annotations=annotations, manifest=manifest)[0]
    return run_checks(
        {"train": data},
        num_classes=num_classes,
        label_width=label_width,
        policy=policy,
        max_bad_fraction=max_bad_fraction,
        report_dir=report,
        workers=workers,
        grayscale=grayscale,
        max_class_ratio=max_class_ratio,
        gx_project=gx_project,
    )


@dataclass(frozen=True)
class CheckResult:
    job_root: str
    passed: bool
    summary: str
    report_file: str
    quarantined: int
    images: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(
    *,
    job_root: str,
    policy: str = "fail",
    max_bad_fraction: float = 0.1,
    grayscale: str = "convert",
    max_class_ratio: float = 10.0,
) -> CheckResult:
    """The annotation gate on an ingested job: the Great Expectations suite over the train
    and validation channels. Writes `<job_root>/check/report.json` and Data Docs; with
    policy `quarantine`, `<job_root>/check/quarantine.json` lists the images packing drops.
    Raises UserError with the summary when the gate fails.
    """
    from sdod.checks.gate import run_checks
    from sdod.config import load_job_spec
    from sdod.hyperparameters import parse_hyperparameters
    from sdod.joblayout import JobLayout
    from sdod.storage import atomic_write_json
    from sdod.train.job import read_channel

    layout = JobLayout(Path(job_root))
    spec = load_job_spec(layout.spec_file)
    hp = parse_hyperparameters(spec.hyperparameters)
    channels = {}
    for name in ("train", "validation"):
        channel = spec.channel(name)
        if channel is not None:
            channels[name] = read_channel(layout, spec, channel, strict=False)
    out = layout.root / "check"
    report = run_checks(
        channels,
        num_classes=hp.num_classes,
        label_width=hp.label_width,
        policy=policy,
        max_bad_fraction=max_bad_fraction,
        grayscale=grayscale,
        max_class_ratio=max_class_ratio,
        report_dir=out,
    )
    atomic_write_json(out / "quarantine.json", report.quarantined)
    if not report.passed:
        raise UserError(f"{report.summary()}\nreport: {report.report_file}")
    return CheckResult(
        str(layout.root),
        True,
        report.summary(),
        str(report.report_file),
        len(report.quarantined),
        report.images,
    )


@dataclass(frozen=True)
class PackJobResult:
    job_root: str
    records: dict[str, int]
    rec_files: dict[str, str]
    train_spec: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pack_job(*, job_root: str, workers: int = 1) -> PackJobResult:
    """Pack the train/validation channels of an ingested job into RecordIO under
    `<job_root>/packed/`, and derive the training spec whose channels are those files
    (`application/x-recordio`), as a SageMaker user who packs first would send it."""
    import copy
    import json

    from sdod.config import load_job_spec
    from sdod.data import pack as packing
    from sdod.joblayout import JobLayout
    from sdod.train.job import read_channel

    layout = JobLayout(Path(job_root))
    spec = load_job_spec(layout.spec_file)
    listed = layout.root / "check" / "quarantine.json"  # written by `check`
    quarantined = json.loads(listed.read_text()) if listed.is_file() else []
    records, files, channels = {}, {}, []
    for name in ("train", "validation"):
        channel = spec.channel(name)
        if channel is None:
            continue
        data = read_channel(layout, spec, channel, strict=False)
        dropped = {q["key"] for q in quarantined}
        quarantined_files = {q["file"] for q in quarantined}
        unlisted = [p for p in data.problems if p["file"] not in quarantined_files]
        if unlisted:  # the check stage fails on these unless it quarantined them
            first = unlisted[0]
            raise UserError(f"channel {name}: {first['file']}: {first['message']} (check first)")
        data.samples = [s for s in data.samples if f"{name}/{s.key}" not in dropped]
        prefix = layout.root / "packed" / name / name
        result = packing.pack(
            packing.items_from_samples(data, layout.channel_dir(name)),
            prefix,
            workers=workers,
            progress=False,
        )
        records[name], files[name] = result.records, result.rec
        if data.categories:  # RecordIO has no class names: keep them beside the .rec
            from sdod.storage import atomic_write_json

            atomic_write_json(
                prefix.parent / "classes.json", {str(k): v for k, v in data.categories.items()}
            )
        channels.append(
            {
                "ChannelName": name,
                "ContentType": "application/x-recordio",
                "InputMode": "File",
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": str(prefix.parent)}
                },
            }
        )
    derived = copy.deepcopy(spec.raw)
    derived["InputDataConfig"] = channels + [
        c for c in derived["InputDataConfig"] if c["ChannelName"] == "model"
    ]
    return PackJobResult(str(layout.root), records, files, derived)
