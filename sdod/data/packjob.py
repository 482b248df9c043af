"""Pack a job's train and validation channels into RecordIO in the object store, and
derive the CreateTrainingJob request that trains from them.

The channels are read through a local cache; what the check stage quarantined is dropped;
`<channel>.rec/.idx/.lst` and `classes.json` (RecordIO carries no class names) go to
`<work_uri>/<job>/packed/<channel>/`. The derived request's channels are those prefixes
(`application/x-recordio`, the original InputMode), and its `CheckpointConfig.S3Uri`
defaults to `<work_uri>/<job>/checkpoints/`, so a retried training task on another worker
resumes instead of starting over.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdod.checks.quarantine import Quarantine
from sdod.errors import UserError
from sdod.jobspec import Channel, TrainingJobSpec
from sdod.storage import S3Options, atomic_write_json, join_uri
from sdod.transfer import upload_tree


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
    quarantine: Quarantine,
    checkpoint_uri: str | None = None,
    workers: int = 1,
    s3: S3Options | None = None,
) -> PackJobResult:
    from sdod.data.ingest import to_job_root
    from sdod.joblayout import JobLayout

    to_job_root(spec, str(cache), s3=s3)
    layout = JobLayout(cache)
    records, files, channels = {}, {}, []
    for name in ("train", "validation"):
        channel = spec.channel(name)
        if channel is None:
            continue
        folder = cache / "packed" / name
        records[name] = _pack_channel(layout, spec, channel, quarantine, folder, workers)
        target = join_uri(out_uri, name) + "/"
        upload_tree(folder, target, s3=s3)
        files[name] = join_uri(target, f"{name}.rec")
        channels.append(Channel(name, target, "application/x-recordio", channel.input_mode))
    model = spec.channel("model")
    derived = spec.with_channels(channels + ([model] if model is not None else []))
    if checkpoint_uri and not spec.checkpoint_uri:
        derived = derived.with_checkpoint(checkpoint_uri)
    return PackJobResult(spec.name, records, files, derived.to_request())


def _pack_channel(
    layout: Any, spec: TrainingJobSpec, channel: Any, quarantine: Quarantine, folder: Path,
    workers: int,
) -> int:  # fmt: skip
    """One channel's good samples packed into `folder/<name>.rec` (+ `classes.json`); the
    record count. A file the reader skipped must be on the quarantine list."""
    from sdod.checks.quarantine import relative_file
    from sdod.data import pack as packing
    from sdod.data.channels import read_channel

    name, cache = channel.name, layout.root
    data = read_channel(layout, spec, channel, strict=False)
    unlisted = [p for p in data.problems if not quarantine.lists_file(relative_file(p.file, cache))]
    if unlisted:  # the check stage fails on these unless it quarantined them
        first = unlisted[0]
        raise UserError(
            f"channel {name}: {relative_file(first.file, cache)}: {first.message} "
            "(run the annotation check first: it fails or quarantines such files)"
        )
    data.samples = [s for s in data.samples if not quarantine.drops(name, s.key)]
    result = packing.pack(
        packing.items_from_samples(data, layout.channel_dir(name)),
        folder / name,
        workers=workers,
        progress=False,
    )
    if data.categories:
        atomic_write_json(folder / "classes.json", {str(k): v for k, v in data.categories.items()})
    return result.records
