"""The train stage: a training job from a spec, a job root or the SageMaker container.

The job's name is claimed for the run (`sdod.train.names`); a spec is first ingested into
its job root; the training itself is `sdod.train.job`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sdod.jobspec import TrainingJobSpec
from sdod.storage import S3Options

if TYPE_CHECKING:
    from sdod.train.job import JobOutcome
    from sdod.train.stopping import StopFlag


def train(
    *,
    job_root: str | None = None,
    spec: TrainingJobSpec | None = None,
    s3: S3Options | None = None,
    log: Callable[[str], None] = print,
    stop: StopFlag | None = None,
    nproc_per_node: int | None = None,
    rdzv_endpoint: str | None = None,
) -> JobOutcome:
    """Train `spec` (ingested into `job_root`, default `./jobs/<name>`), the job already
    under `job_root`, or, with neither, the SageMaker container's `/opt/ml` job."""
    from sdod.pipeline.ingest import to_job_root
    from sdod.train.job import job_root_spec, train_job
    from sdod.train.names import claimed

    new = spec is not None
    if spec is not None:
        job_root = job_root or str(Path("jobs") / spec.name)
    elif job_root is None:  # inside a SageMaker training container (sdod.container)
        from sdod.container import container_job

        job_root, spec, rdzv_endpoint = container_job()
    spec = spec or job_root_spec(job_root)
    with claimed(spec, new=new, job_root=job_root, s3=s3) as named:
        if new:
            to_job_root(named, job_root, s3=s3)
        return train_job(
            job_root,
            log=log,
            stop=stop,
            nproc_per_node=nproc_per_node,
            rdzv_endpoint=rdzv_endpoint,
            spec=named,
        )
