"""The tools beside the pipeline, called by the CLI: each works on files or URIs it is given,
outside a job's stages (`sdod.stages`). Typed keyword arguments in, a small result out;
the machinery is imported inside (importing this is cheap)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdod.checks.policy import DEFAULT

if TYPE_CHECKING:
    from sdod.checks.gate import CheckReport
    from sdod.data.convert import ConvertResult
    from sdod.data.pack import PackResult
    from sdod.evaluate.run import EvaluateResult
    from sdod.serve.slicing import Slicing
    from sdod.storage import S3Options


def validate(
    *,
    num_classes: int,
    images: str | None = None,
    annotations: str | None = None,
    manifest: str | None = None,
    rec: str | None = None,
    label_width: int = 350,
    policy: str = DEFAULT.policy,
    max_bad_fraction: float = DEFAULT.max_bad_fraction,
    report: str | None = None,
    workers: int = 2,
    grayscale: str = DEFAULT.grayscale,
    max_class_ratio: float = DEFAULT.max_class_ratio,
    gx_project: str | None = None,
) -> CheckReport:
    """The annotation suite on one dataset given by paths: image+JSON folders, a manifest
    or a `.rec`; with `report`, report.json and the Data Docs in that folder."""
    from sdod.checks.gate import validate_inputs

    return validate_inputs(
        num_classes=num_classes,
        images=images,
        annotations=annotations,
        manifest=manifest,
        rec=rec,
        label_width=label_width,
        policy=policy,
        max_bad_fraction=max_bad_fraction,
        report=report,
        workers=workers,
        grayscale=grayscale,
        max_class_ratio=max_class_ratio,
        gx_project=gx_project,
    )


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
    """Pack a dataset (image+JSON folders, a manifest, or an im2rec `lst` under `root`) into
    MXNet RecordIO `out.rec/.idx/.lst` (im2rec's detection layout)."""
    from sdod.data.pack import pack_inputs

    return pack_inputs(
        out=out,
        images=images,
        annotations=annotations,
        manifest=manifest,
        lst=lst,
        root=root,
        resize=resize,
        quality=quality,
        workers=workers,
        shards=shards,
    )


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
) -> ConvertResult:
    """Any supported input into one of SageMaker's training formats (`to`) in `out`."""
    from sdod.data.convert import convert_inputs

    result: ConvertResult = convert_inputs(
        to=to,
        out=out,
        channel=channel,
        images=images,
        annotations=annotations,
        manifest=manifest,
        rec=rec,
        coco=coco,
        voc=voc,
    )
    return result


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
    slicing: Slicing | None = None,
    s3: S3Options | None = None,
) -> EvaluateResult:
    """Detections of `model` (a file, an object URI or a registry version) on a dataset
    (image+JSON folders, a manifest or a `.rec`), then mAP per class, as the evaluate
    stage scores; `slicing` predicts large images tile by tile."""
    from sdod.pipeline.evaluate import evaluate_model

    return evaluate_model(
        model=model,
        rec=rec,
        images=images,
        annotations=annotations,
        manifest=manifest,
        metric=metric,
        overlap_threshold=overlap_threshold,
        out=out,
        examples=examples,
        slicing=slicing,
        s3=s3,
    )


def resolve_model(uri: str, *, s3: S3Options | None = None) -> Path:
    """A local model.tar.gz for a file, an object URI, a registry version or group."""
    from sdod.registry import resolve_model as resolve

    return resolve(uri, s3=s3)


def export_onnx(*, model: str, out: str | None = None) -> dict[str, Any]:
    """Add `model.onnx` to a model.tar.gz (in place, or as a new archive `out`)."""
    from sdod.serve.onnx import add_onnx

    return add_onnx(model, out)


def import_gluoncv(
    *,
    params: str,
    network: str,
    out: str,
    classes: list[str] | None = None,
    nms_threshold: float = 0.45,
) -> dict[str, object]:
    """A model.tar.gz from a GluonCV SSD's .params file."""
    from sdod.model.gluoncv import import_gluoncv as run

    return run(
        params=params, network=network, out=out, classes=classes, nms_threshold=nms_threshold
    )


def layers(*, base_network: str, image_shape: int = 300, pattern: str | None = None) -> list[str]:
    """The layer names of a network that `freeze_layer_pattern` matches (all without one)."""
    from sdod.model.ssd import layer_names

    return layer_names(base_network, image_shape, pattern)


def tune(
    *,
    tuning_spec: str | dict[str, Any],
    parallel: int = 1,
    work: str | None = None,
    storage: str | None = None,
    s3: S3Options | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """A whole tuning job here, from a CreateHyperParameterTuningJob request (path or dict),
    `parallel` trials at a time; its DescribeHyperParameterTuningJob summary (also written
    to `<S3OutputPath>/<tuning-job>/`). The DAG runs it in `sdod.stages`' three steps."""
    from sdod.tune.steps import read_tuning_request, run_tuning

    spec = read_tuning_request(tuning_spec)
    return run_tuning(spec, parallel=parallel, work=work, storage=storage, s3=s3, log=log)
