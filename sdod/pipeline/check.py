"""The check stage: the annotation gate on a job's train and validation channels.

Reads the channels from where the spec points (the object store, through a local cache),
runs the suite and uploads to the check location (`<S3OutputPath>/<job>/check/`):

```
report.json, data_docs/     the gate's report (opens from anywhere)
quarantine.json             the images it dropped, and why
checked/<channel>.json      the clean set: the accepted samples, parsed, that pack reads
```

Paths in both lists are relative to the job (`input/data/<channel>/<file>`), not to this
machine. A clean set names the channel URI it was read from: pack uses it only for that
channel, so a set left by another run's data is never packed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdod.checks.policy import DEFAULT
from sdod.checks.quarantine import FILE_NAME, Quarantine, relative_file
from sdod.errors import UserError
from sdod.jobspec import Channel, TrainingJobSpec
from sdod.storage import S3Options, atomic_write_json, join_uri, read_bytes
from sdod.transfer import upload_tree

if TYPE_CHECKING:
    from sdod.data.sample import SampleSet

CLEAN_FOLDER = "checked"
CHANNELS = ("train", "validation")  # what the gate checks and pack packs


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
    clean_uri: str = ""  # <check>/checked/: <channel>.json, the clean set pack reads

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
    report, quarantine list and clean set to `report_uri`; UserError (naming the report)
    when the gate fails."""
    from sdod.checks.gate import run_checks

    hp = spec.hp
    channels = _read_channels(spec, cache, s3)
    out = cache / "check"
    shutil.rmtree(out / CLEAN_FOLDER, ignore_errors=True)  # a channel of an earlier run
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
    if report.passed:
        _write_clean_sets(spec, channels, quarantined, cache, out / CLEAN_FOLDER)
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
        join_uri(report_uri, CLEAN_FOLDER) + "/",
    )


def _read_channels(
    spec: TrainingJobSpec, cache: Path, s3: S3Options | None
) -> dict[str, SampleSet]:
    """The job's train and validation channels, brought into `cache` and read leniently:
    bad files are reported by the gate, not raised."""
    from sdod.data.channels import read_channel
    from sdod.joblayout import JobLayout
    from sdod.pipeline.ingest import to_job_root

    to_job_root(spec, str(cache), s3=s3)
    layout = JobLayout(cache)
    channels = {}
    for name in CHANNELS:
        channel = spec.channel(name)
        if channel is not None:
            channels[name] = read_channel(layout, spec, channel, strict=False)
    return channels


def _write_clean_sets(
    spec: TrainingJobSpec,
    channels: dict[str, SampleSet],
    quarantined: Quarantine,
    root: Path,
    folder: Path,
) -> None:
    """Each channel's accepted samples as `folder/<channel>.json`: its URI, its class names
    and its samples (`SampleSet.to_json`), image files relative to the job root `root`."""
    from sdod.data.sample import SampleSet

    for name, data in channels.items():
        channel = spec.channel(name)
        assert channel is not None
        kept = [s for s in data.samples if not quarantined.drops(name, s.key)]
        raw = SampleSet(kept, data.categories).to_json()
        for row in raw["samples"]:  # [key, image, width, height, boxes, labels, difficult]
            row[1] = relative_file(row[1], root)
        clean = {"channel": name, "source": channel.uri, **raw}
        atomic_write_json(folder / f"{name}.json", clean, indent=None)


def clean_set_uri(quarantine_uri: str, channel: str) -> str:
    """Where the check that wrote the quarantine list `quarantine_uri` put the clean set of
    `channel`: both are its outputs, in its one folder."""
    return join_uri(quarantine_uri.rsplit("/", 1)[0], CLEAN_FOLDER, f"{channel}.json")


def read_clean_set(
    uri: str, channel: Channel, root: Path, *, s3: S3Options | None = None
) -> SampleSet | None:
    """The clean set at `uri` with its image files under the job root `root`; None when
    there is none, or it was read from other data than `channel`'s (pack then reads the
    channel itself)."""
    from sdod.data.sample import SampleSet
    from sdod.safe_paths import inside

    try:
        raw = json.loads(read_bytes(uri, s3=s3))
    except (FileNotFoundError, UserError):
        return None
    except ValueError as exc:
        raise UserError(f"{uri}: the clean set is not JSON ({exc}); re-run the check") from None
    if not isinstance(raw, dict) or raw.get("source") != channel.uri:
        return None
    try:
        data = SampleSet.from_json(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{uri}: not a clean set ({exc}); re-run the check") from None
    for sample in data.samples:  # a file of the job root, or an address (s3://, .rec#)
        if "://" not in sample.image and not Path(sample.image).is_absolute():
            file, mark, offset = sample.image.partition(".rec#")  # a record of a .rec
            path = inside(root, file + (".rec" if mark else ""), "clean set image")
            sample.image = f"{path}#{offset}" if mark else str(path)
    return data
