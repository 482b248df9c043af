"""A training job's name is its identity, as in SageMaker: `CreateTrainingJob` answers
`ResourceInUse` for a name that is running or has run. sdod refuses, before anything is
ingested or written:

- a name already running on this machine: the job holds an exclusive `flock` on
  `<SDOD_SLOT_DIR>/job-<name>.lock` for its whole life (the kernel releases it however the
  process ends, so a killed job's name is free again at once, for its rerun to resume).
  Its torchrun workers run under the launcher's hold; a job of several machines holds
  its name per job root, since each machine runs the same name;
- a new job (`sdod train --job-spec`) whose name has delivered a model already:
  `S3OutputPath/<job>/output/model.tar.gz` exists. (The Airflow operator renames such a job
  instead; a rerun from its job root, `--job-root`, resumes it.)

Jobs on other hosts that share a name and a checkpoint location are caught by the
checkpoint itself: it records the job's name and hyperparameters (`train.checkpoint`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sdod.errors import UserError
from sdod.jobspec import TrainingJobSpec
from sdod.settings import RuntimeSettings
from sdod.storage import S3Options, exists
from sdod.train.slots import open_lock_file


class JobInUse(UserError):
    """SageMaker's ResourceInUse: the job name is running or has delivered a model."""


@contextmanager
def running(name: str, *, folder: Path | None = None) -> Iterator[None]:
    """Hold the job name on this machine for the body; JobInUse when another process does.
    (`name` is the job's name, or for a job of several machines, see `_lock_name`.)"""
    folder = folder or RuntimeSettings.from_env().slot_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"job-{name}.lock"
    fd = open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = path.read_text(errors="replace").strip() or "another process"
        os.close(fd)
        raise JobInUse(
            f"ResourceInUse: training job {name!r} is already running on this machine "
            f"({holder}); wait for it, stop it, or give this job another TrainingJobName"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def refuse_delivered(spec: TrainingJobSpec, *, s3: S3Options | None = None) -> None:
    """JobInUse when the job's name has delivered a model already (a new job may not
    overwrite another's model)."""
    from sdod.workspace import output_uris

    model = output_uris(spec).model
    if exists(model, s3=s3):
        raise JobInUse(
            f"ResourceInUse: training job {spec.name!r} has already delivered {model}; give "
            "the new job another TrainingJobName (a name is used once, as in SageMaker), or "
            "rerun the old one from its job root with --job-root to resume it"
        )


@contextmanager
def claimed(
    spec: TrainingJobSpec, *, new: bool, job_root: str | None = None, s3: S3Options | None = None
) -> Iterator[TrainingJobSpec]:
    """The job's name held for the body (see the module): refused when a job of that name
    runs on this machine, or, for a `new` job, when that name has delivered a model."""
    if _torchrun_worker():  # the launcher on this machine holds the name for its workers
        yield spec
        return
    if new:
        refuse_delivered(spec, s3=s3)
    with running(_lock_name(spec, job_root)):
        yield spec


def _lock_name(spec: TrainingJobSpec, job_root: str | None) -> str:
    """What is held: the job's name; for a job of several machines (each runs the same
    name; two may share a host, as in tests), the name and this machine's job root."""
    if spec.instance_count == 1 or job_root is None:
        return spec.name
    root = os.path.realpath(job_root).encode()
    return f"{spec.name}-{hashlib.sha1(root, usedforsecurity=False).hexdigest()[:12]}"


def _torchrun_worker() -> bool:
    """Whether this process is one of the job's torchrun workers (torchrun sets these; read
    here rather than through `train.distributed.World`, which imports torch)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
