"""Where each stage of a job keeps its durable files: URIs in the object store.

Tasks may run on different workers and hosts that share no disk, so every stage reads
its inputs from, and writes its outputs to, these locations; XCom carries only the URIs.
A worker's local folders (`storage.cache_root()`) are caches.

```
<work_uri>/<job>/run.json                 the run that owns this work area
<work_uri>/<job>/input/<channel>/         ingest: a snapshot of each File-mode channel
<work_uri>/<job>/packed/<channel>/        pack: <channel>.rec/.idx/.lst, classes.json
<work_uri>/<job>/checkpoints/             train: CheckpointConfig.S3Uri by default
<S3OutputPath>/<job>/check/               check: report.json, quarantine.json, data_docs/,
                                           checked/<channel>.json (the clean set pack packs)
<S3OutputPath>/<job>/output/              train: model.tar.gz (Completed, Stopped) or failure
<S3OutputPath>/<job>/evaluation/          evaluate: metrics.json, per_class_ap.csv, plots
<model_registry_uri>/<group>/v<N>/        publish: model.tar.gz, metrics.json, approval.json
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdod.jobspec import TrainingJobSpec
from sdod.settings import SiteSettings
from sdod.storage import cache_root, join_uri


def default_work_uri() -> str:
    """`SDOD_WORK_URI`, else `<SDOD_STATE_DIR>/work`: the embedded default is a local folder."""
    return SiteSettings.from_env().work_uri


@dataclass(frozen=True)
class JobURIs:
    """The object-store locations of one job's stages."""

    job: str
    work: str  # <work_uri>/<job>
    output_root: str  # <S3OutputPath>/<job>

    @classmethod
    def of(cls, spec: TrainingJobSpec, work_uri: str | None = None) -> JobURIs:
        work = work_uri or default_work_uri()
        return cls(spec.name, join_uri(work, spec.name), join_uri(spec.output_path, spec.name))

    @property
    def run_marker(self) -> str:
        return join_uri(self.work, "run.json")

    def input(self, channel: str) -> str:
        return join_uri(self.work, "input", channel) + "/"

    def packed(self, channel: str) -> str:
        return join_uri(self.work, "packed", channel) + "/"

    @property
    def checkpoints(self) -> str:
        return join_uri(self.work, "checkpoints") + "/"

    @property
    def check(self) -> str:
        return join_uri(self.output_root, "check") + "/"

    @property
    def output(self) -> str:
        return join_uri(self.output_root, "output") + "/"

    @property
    def model(self) -> str:
        return join_uri(self.output_root, "output", "model.tar.gz")

    @property
    def failure(self) -> str:
        return join_uri(self.output_root, "output", "failure")

    @property
    def evaluation(self) -> str:
        return join_uri(self.output_root, "evaluation") + "/"


def output_uris(spec: TrainingJobSpec, job_name: str | None = None) -> JobURIs:
    """The locations under S3OutputPath (for `job_name`, default the spec's own): the
    check report, the model, the evaluation."""
    name = job_name or spec.name
    return JobURIs(name, "", join_uri(spec.output_path, name))


def task_cache(job: str, stage: str) -> Path:
    """A local cache folder of one job on this machine (`channels`: the job root the check
    and pack stages both read, so a worker running both downloads the channels once)."""
    path = cache_root() / job / stage
    path.mkdir(parents=True, exist_ok=True)
    return path
