"""The pack stage: a job's train and validation channels into RecordIO in the object store,
and the CreateTrainingJob request that trains from them.

The samples are the check's clean set (`checked/<channel>.json` beside its quarantine
list), so the annotations are parsed once, by the check; without one (no check, or one
that read other data) pack reads the channel and drops what the quarantine list names.
The image files come through the local cache the check filled. `<channel>.rec/.idx/.lst`
and `classes.json` (RecordIO carries no class names) go to `<out_uri>/<channel>/`. The
derived request's channels are those prefixes (`application/x-recordio`, the original
InputMode), and its `CheckpointConfig.S3Uri` defaults to `checkpoint_uri`, so a retried
training task on another worker resumes instead of starting over.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdod.checks.quarantine import Quarantine, read_quarantine, relative_file
from sdod.errors import UserError
from sdod.jobspec import Channel, TrainingJobSpec
from sdod.pipeline.check import CHANNELS, clean_set_uri, read_clean_set
from sdod.storage import S3Options, atomic_write_json, join_uri
from sdod.transfer import upload_tree

if TYPE_CHECKING:
    from sdod.data.sample import SampleSet
    from sdod.joblayout import JobLayout


@dataclass(frozen=True)
class PackJobResult:
    job_name: str
    records: dict[str, int]
    rec_files: dict[str, str]  # channel -> URI of its .rec
    train_spec: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pack_job(
    spec: TrainingJobSpec,
    *,
    out_uri: str,
    cache: Path,
    quarantine_uri: str | None = None,
    checkpoint_uri: str | None = None,
    workers: int = 1,
    s3: S3Options | None = None,
) -> PackJobResult:
    """Pack the channels (the check's clean set, or the channel less its quarantine list
    `quarantine_uri`) into `<out_uri>/<channel>/`, through the local job root `cache`."""
    from sdod.joblayout import JobLayout
    from sdod.pipeline.ingest import to_job_root

    quarantine = read_quarantine(quarantine_uri, s3=s3)
    to_job_root(spec, str(cache), s3=s3)
    layout = JobLayout(cache)
    records, files, channels = {}, {}, []
    for name in CHANNELS:
        channel = spec.channel(name)
        if channel is None:
            continue
        data = None
        if quarantine_uri:
            data = read_clean_set(clean_set_uri(quarantine_uri, name), channel, cache, s3=s3)
        if data is None:
            data = _accepted(layout, spec, channel, quarantine)
        folder = cache / "packed" / name
        records[name] = _pack(data, layout.channel_dir(name), folder / name, workers)
        target = join_uri(out_uri, name) + "/"
        upload_tree(folder, target, s3=s3)
        files[name] = join_uri(target, f"{name}.rec")
        channels.append(Channel(name, target, "application/x-recordio", channel.input_mode))
    model = spec.channel("model")
    derived = spec.with_channels(channels + ([model] if model is not None else []))
    if checkpoint_uri and not spec.checkpoint_uri:
        derived = derived.with_checkpoint(checkpoint_uri)
    return PackJobResult(spec.name, records, files, derived.to_request())


def _accepted(
    layout: JobLayout, spec: TrainingJobSpec, channel: Channel, quarantine: Quarantine
) -> SampleSet:
    """The channel read here, less what the quarantine list drops. A file the reader
    skipped must be on that list."""
    from sdod.data.channels import read_channel

    name, root = channel.name, layout.root
    data = read_channel(layout, spec, channel, strict=False)
    unlisted = [p for p in data.problems if not quarantine.lists_file(relative_file(p.file, root))]
    if unlisted:  # the check stage fails on these unless it quarantined them
        first = unlisted[0]
        raise UserError(
            f"channel {name}: {relative_file(first.file, root)}: {first.message} "
            "(run the annotation check first: it fails or quarantines such files)"
        )
    data.samples = [s for s in data.samples if not quarantine.drops(name, s.key)]
    return data


def _pack(data: SampleSet, images: Path, prefix: Path, workers: int) -> int:
    """The samples packed into `prefix.rec/.idx/.lst` (+ `classes.json` beside them, the
    names RecordIO does not carry); the record count."""
    from sdod.data import pack as packing

    result = packing.pack(
        packing.items_from_samples(data, images), prefix, workers=workers, progress=False
    )
    if data.categories:
        names = {str(k): v for k, v in data.categories.items()}
        atomic_write_json(prefix.parent / "classes.json", names)
    return result.records
