"""The annotation gate on a job's train and validation channels, as a pipeline stage.

Reads the channels from where the spec points (the object store, through a local cache),
runs the suite and uploads `report.json`, `quarantine.json` and the Data Docs to the
check location (`<S3OutputPath>/<job>/check/`), so the report opens from anywhere and the
pack stage, on any worker, drops what was quarantined. Paths in the quarantine list are
relative to the job (`input/data/<channel>/<file>`), not to this machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdod.checks.policy import DEFAULT
from sdod.checks.quarantine import FILE_NAME, Quarantine
from sdod.errors import UserError
from sdod.jobspec import TrainingJobSpec
from sdod.storage import S3Options, atomic_write_json, join_uri
from sdod.transfer import upload_tree

if TYPE_CHECKING:
    from sdod.data.sample import SampleSet


@dataclass(frozen=True)
class CheckResult:
    job_name: str
    passed: bool
    summary: str
    report_uri: str  # <check>/report.json
    quarantine_uri: str  # <check>/quarantine.json
    data_docs_uri: str | None
    quarantined: int
    images: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_job(
    spec: TrainingJobSpec,
    *,
    report_uri: str,
    cache: Path,
    policy: str = DEFAULT.policy,
    max_bad_fraction: float = DEFAULT.max_bad_fraction,
    grayscale: str = DEFAULT.grayscale,
    max_class_ratio: float = DEFAULT.max_class_ratio,
    s3: S3Options | None = None,
) -> CheckResult:
    """Run the annotation gate on the job's channels (read into `cache`) and upload its
    report to `report_uri`; UserError (naming the report) when the gate fails."""
    from sdod.checks.gate import run_checks

    hp = spec.hp
    channels = _read_channels(spec, cache, s3)
    out = cache / "check"
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
    quarantined = Quarantine.of(report.quarantined, cache)
    atomic_write_json(out / FILE_NAME, quarantined.to_json())
    upload_tree(out, report_uri, s3=s3)
    report_file = join_uri(report_uri, "report.json")
    docs = join_uri(report_uri, "data_docs") if (out / "data_docs").is_dir() else None
    if not report.passed:
        raise UserError(f"{report.summary()}\nreport: {report_file}")
    return CheckResult(
        spec.name,
        True,
        report.summary(),
        report_file,
        join_uri(report_uri, FILE_NAME),
        docs,
        len(quarantined),
        report.images,
    )


def _read_channels(
    spec: TrainingJobSpec, cache: Path, s3: S3Options | None
) -> dict[str, SampleSet]:
    """The job's train and validation channels, brought into `cache` and read leniently:
    bad files are reported by the gate, not raised."""
    from sdod.data.channels import read_channel
    from sdod.data.ingest import to_job_root
    from sdod.joblayout import JobLayout

    to_job_root(spec, str(cache), s3=s3)
    layout = JobLayout(cache)
    channels = {}
    for name in ("train", "validation"):
        channel = spec.channel(name)
        if channel is not None:
            channels[name] = read_channel(layout, spec, channel, strict=False)
    return channels
