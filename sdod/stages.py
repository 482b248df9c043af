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
    return packing.pack(items, out, options=options, workers=workers)


def train(
    *,
    job_root: str | None = None,
    job_spec: str | dict[str, Any] | None = None,
    s3: S3Options | None = None,
    log: Callable[[str], None] = print,
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
    return train_job(job_root, log=log)
