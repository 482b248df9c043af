"""The ingest stage: a job's channels from where the user keeps them to where the job
reads them (the copying itself is `sdod.transfer`'s).

Two destinations. `to_job_root` materialises each File-mode channel in a local job folder
(`input/data/<channel>/`), as SageMaker does inside a training container. `to_work`
snapshots each File-mode channel into the work location in the object store
(`<work_uri>/<job>/input/<channel>/`), so the later tasks, on any worker, read the same
data even if the source changes; the spec it returns points at the snapshot.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sdod.errors import UserError
from sdod.jobspec import TrainingJobSpec
from sdod.storage import S3Options, read_bytes, remove_tree, write_bytes
from sdod.transfer import copy_tree, sync_to_local


@dataclass(frozen=True)
class IngestResult:
    job_name: str
    job_root: str  # the local job folder, or the job's work URI
    channels: dict[str, dict[str, Any]]
    pipe_channels: list[str] = field(default_factory=list)
    ignored_fields: list[str] = field(default_factory=list)
    spec: dict[str, Any] | None = None  # to_work: the spec reading the snapshot

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest(
    spec: TrainingJobSpec,
    *,
    job_root: str | None = None,
    work_uri: str | None = None,
    run_id: str | None = None,
    s3: S3Options | None = None,
    workers: int = 8,
) -> IngestResult:
    """To a local job folder (`job_root`) or a snapshot under `work_uri`: exactly one."""
    if (job_root is None) == (work_uri is None):
        raise UserError("give exactly one of job_root (a local folder) and work_uri")
    if job_root is not None:
        return to_job_root(spec, job_root, s3=s3, workers=workers)
    assert work_uri is not None
    return to_work(spec, work_uri, run_id=run_id, s3=s3, workers=workers)


def to_job_root(
    spec: TrainingJobSpec, job_root: str, *, s3: S3Options | None = None, workers: int = 8
) -> IngestResult:
    from sdod.joblayout import JobLayout, write_config

    layout = JobLayout(Path(job_root))
    write_config(layout, spec)
    channels, pipe = {}, []
    for channel in spec.channels:
        if channel.streamed:
            pipe.append(channel.name)
            continue
        synced = sync_to_local(
            channel.uri,
            layout.channel_dir(channel.name),
            s3=s3,
            workers=workers,
            manifest=channel.s3_data_type == "ManifestFile",
        )
        channels[channel.name] = synced.to_dict()
    return IngestResult(spec.name, str(layout.root), channels, pipe, list(spec.ignored_fields))


def _claim(marker: str, work: str, run_id: str, s3: S3Options | None) -> bool:
    """Make `work` this run's: a work area left by another run is cleared (its checkpoints
    must not resume this run). True when it was cleared."""
    try:
        owner = json.loads(read_bytes(marker, s3=s3)).get("run_id")
    except Exception:  # no marker yet (or unreadable): nothing of another run to keep
        owner = None
    cleared = owner != run_id
    if cleared:
        remove_tree(work, s3=s3)
    write_bytes(marker, json.dumps({"run_id": run_id}).encode(), s3=s3)
    return cleared


def to_work(
    spec: TrainingJobSpec,
    work_uri: str,
    *,
    run_id: str | None = None,
    s3: S3Options | None = None,
    workers: int = 8,
) -> IngestResult:
    from sdod.workspace import JobURIs

    uris = JobURIs.of(spec, work_uri)
    if run_id is not None:
        _claim(uris.run_marker, uris.work, run_id, s3)
    channels, pipe, snapshots = {}, [], {}
    for channel in spec.channels:
        if channel.streamed:
            pipe.append(channel.name)
            continue
        target = uris.input(channel.name)
        listed = channel.s3_data_type == "ManifestFile"  # the snapshot holds its objects
        synced = copy_tree(channel.uri, target, s3=s3, workers=workers, manifest=listed)
        channels[channel.name] = synced.to_dict()
        snapshots[channel.name] = target
    staged = spec.with_channel_uris(snapshots).to_request()
    return IngestResult(
        spec.name, uris.work, channels, pipe, list(spec.ignored_fields), spec=staged
    )
