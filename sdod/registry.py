"""The model registry: gated, numbered, approved versions of a model group.

In the spirit of SageMaker's Model Registry (a model package group with versions and an
approval status), kept as plain objects in the store:

```
<registry>/<group>/v<N>/metrics.json     the evaluation that gated it; written first and
                                         create-only: it claims the number
<registry>/<group>/v<N>/model.tar.gz     the artifact, as trained
<registry>/<group>/v<N>/approval.json    written last: the version exists once this does
```

Two publishers racing for one number: the create-only write (S3's `If-None-Match: *`, or
`O_EXCL`) lets exactly one claim it; the other takes the next number, so every publish gets
its own version and no model is overwritten. A version without `approval.json` (an upload
that failed half-way) is invisible: nothing lists, resolves or serves it, and its number is
not reused. Each object is written whole (an S3 PUT, or a local temporary file and a
rename), so `approval.json` is either absent or complete.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from hashlib import sha1
from pathlib import Path
from typing import Any

from sdod.errors import UserError
from sdod.storage import (
    S3Options,
    cache_root,
    create_only,
    exists,
    fetch_file,
    is_s3,
    join_uri,
    local_path,
    read_bytes,
    upload_file,
    write_bytes,
)
from sdod.transfer import list_objects

APPROVAL = "approval.json"
MAX_CLAIM_TRIES = 1000
VERSION = re.compile(r"v([1-9][0-9]*)")


@dataclass(frozen=True)
class Version:
    number: int
    uri: str  # <group>/v<N>/
    approval: dict[str, Any]

    @property
    def map(self) -> float | None:
        value = self.approval.get("mAP")
        return float(value) if value is not None else None

    @property
    def model(self) -> str:
        return join_uri(self.uri, "model.tar.gz")


@dataclass(frozen=True)
class PublishResult:
    published: bool
    uri: str  # the version's URI
    version: int
    mAP: float | None
    previous_mAP: float | None
    reason: str
    model: str = ""
    approval: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version_numbers(group: str, s3: S3Options | None) -> dict[int, set[str]]:
    """Version number -> the file names under it (approved or not)."""
    try:
        listing = list_objects(group, s3=s3)
    except UserError:  # no group yet
        return {}
    found: dict[int, set[str]] = {}
    for rel in listing:
        head, _, rest = rel.partition("/")
        m = VERSION.fullmatch(head)
        if m and rest:
            found.setdefault(int(m.group(1)), set()).add(rest)
    return found


def list_versions(group: str, *, s3: S3Options | None = None) -> list[Version]:
    """The approved versions of a group, oldest first."""
    return _approved(group, _version_numbers(group, s3), s3)


def _approved(group: str, numbers: dict[int, set[str]], s3: S3Options | None) -> list[Version]:
    """The approved versions among `numbers` (`_version_numbers`' listing), oldest first."""
    out = []
    for number, names in sorted(numbers.items()):
        if APPROVAL not in names:
            continue
        uri = join_uri(group, f"v{number}") + "/"
        approval = json.loads(read_bytes(join_uri(uri, APPROVAL), s3=s3))
        out.append(Version(number, uri, approval))
    return out


def _evaluation_map(evaluation: str, s3: S3Options | None) -> tuple[float | None, dict[str, Any]]:
    try:
        metrics = json.loads(read_bytes(evaluation, s3=s3))
    except FileNotFoundError:
        raise UserError(
            f"evaluation {evaluation} does not exist; run `sdod evaluate --out` first"
        ) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"evaluation {evaluation} is not JSON ({exc})") from None
    return _number(metrics.get("mAP")), metrics


def _score(
    training: dict[str, Any], evaluation: str | None, s3: S3Options | None
) -> tuple[float | None, dict[str, Any], str]:
    """The gate's mAP, the metrics it comes from, and their source: the evaluation's, else
    the training job's validation mAP."""
    if evaluation:
        score, metrics = _evaluation_map(evaluation, s3)
        return score, metrics, "evaluation"
    return _number(training.get("validation:mAP")), dict(training), "training"


def _number(value: Any) -> float | None:
    """A metric as a float; None when absent or not a number."""
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _usable(score: float | None) -> bool:
    return score is not None and math.isfinite(score)


def _gate(
    score: float | None,
    what: str,
    group: str,
    approved: list[Version],
    *,
    min_map: float | None,
    force: bool,
) -> tuple[Version | None, bool]:
    """The version this one is held against (the newest with a usable mAP) and whether it
    is forced past it; UserError when the gate refuses."""
    if not _usable(score) and not force:
        raise UserError(
            f"{what} is not a usable score (a job stopped before its first validation, or "
            f"no validation channel); nothing published to {group}. Evaluate the model "
            "(`sdod evaluate --out`) and publish with --evaluation, or force it"
        )
    if min_map is not None and not (_usable(score) and score >= min_map):  # type: ignore[operator]
        raise UserError(f"{what} is below min_map {min_map}; nothing published to {group}")
    scored = [v for v in approved if _usable(v.map)]
    held = scored[-1] if scored else None
    below = held is not None and (not _usable(score) or score < held.map)  # type: ignore[operator]
    if below and not force:
        raise UserError(
            f"{what} is below version v{held.number}'s {held.map} in {group}; nothing "  # type: ignore[union-attr]
            "published (force it to publish anyway)"
        )
    return held, below


def _claim_version(group: str, first: int, metrics: bytes, s3: S3Options | None) -> int:
    """Claim the first free version number from `first` up: its `metrics.json` is written
    create-only, so of two publishers racing for one number exactly one gets it and the
    other takes the next. A claimed number is never reused (not even by a publish that
    failed half-way: that version stays invisible)."""
    number = first
    for _ in range(MAX_CLAIM_TRIES):
        if create_only(join_uri(group, f"v{number}", "metrics.json"), metrics, s3=s3):
            return number
        number += 1
    raise UserError(
        f"{group}: no free version number after {MAX_CLAIM_TRIES} tries from v{first}; "
        "is another process publishing in a loop?"
    )


def publish(
    *,
    model: str,
    group: str,
    evaluation: str | None = None,
    min_map: float | None = None,
    force: bool = False,
    training_job: str | None = None,
    data: dict[str, str] | None = None,
    s3: S3Options | None = None,
) -> PublishResult:
    """Promote `model` to the next version of `group` if it passes the gate.

    The gate is on the evaluation's mAP (`evaluation`: the evaluate stage's metrics.json;
    without one, the training job's validation mAP, and the record says so): a usable
    score, at least `min_map`, and not below the newest approved version that has a score,
    unless `force`. A refusal raises UserError and writes nothing. Concurrent publishers
    each get their own version (see `_claim_version`).
    """
    from sdod.artifact import read_artifact

    local = resolve_model(model, s3=s3)
    artifact = read_artifact(local)  # validates before anything is written
    training_map = artifact.metrics.get("validation:mAP")
    score, metrics, source = _score(artifact.metrics, evaluation, s3)
    what = f"{source} mAP {score}"
    numbers = _version_numbers(group, s3)  # one listing: the approved ones and every claim
    try:
        held, forced = _gate(
            score, what, group, _approved(group, numbers, s3), min_map=min_map, force=force
        )
    except UserError as exc:
        _mirror(group, model, score, source, training_job, refused=str(exc))
        raise
    body = json.dumps(metrics, indent=2).encode()
    number = _claim_version(group, max(numbers, default=0) + 1, body, s3)
    uri = join_uri(group, f"v{number}") + "/"
    upload_file(local, join_uri(uri, "model.tar.gz"), s3=s3)
    approval = _approval(group, number, score, source, metrics, training_map)
    approval.update(
        training_job=training_job, source_model=model, data=data or {},
        previous_version=held.number if held else None,
        previous_mAP=held.map if held else None, forced=forced,
    )  # fmt: skip
    write_bytes(join_uri(uri, APPROVAL), json.dumps(approval, indent=2).encode(), s3=s3)
    _mirror(group, join_uri(uri, "model.tar.gz"), score, source, training_job, version=number)
    return PublishResult(
        True, uri, number, score, held.map if held else None, "published",
        join_uri(uri, "model.tar.gz"), approval,
    )  # fmt: skip


def _mirror(
    group: str, model: str, score: float | None, source: str, training_job: str | None, *,
    version: int | None = None, refused: str = "",
) -> None:  # fmt: skip
    """The publish (`version`), or its refusal, in MLflow's model registry when tracking is
    on (`sdod.tracking.models`; its failure never fails the publish)."""
    from sdod.tracking.models import PublishRecord, mirror_publish

    mirror_publish(PublishRecord(
        group.rstrip("/").rsplit("/", 1)[-1], model, score, source, approved=not refused,
        reason=refused or "published", version=version,
        uri=join_uri(group, f"v{version}") + "/" if version else None, training_job=training_job,
    ))  # fmt: skip


def _approval(
    group: str, number: int, score: float | None, source: str, metrics: dict, training_map: Any
) -> dict[str, Any]:
    """The version's approval record (SageMaker's model package fields, then sdod's gate)."""
    return {
        "ModelPackageGroupName": group.rstrip("/").rsplit("/", 1)[-1],
        "ModelPackageVersion": number,
        "ModelApprovalStatus": "Approved",
        "CreationTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mAP": score,
        "mAP_source": source,
        "metric": metrics.get("metric", "voc07"),
        "overlap_threshold": metrics.get("iou_threshold"),
        "training_mAP": training_map,
    }


def _cached(uri: str, s3: S3Options | None) -> Path:
    folder = cache_root() / "models" / sha1(uri.encode()).hexdigest()[:16]
    return fetch_file(uri, folder / "model.tar.gz", s3=s3)


def resolve_model(uri: str, *, s3: S3Options | None = None) -> Path:
    """A local model.tar.gz for any way of naming one: a local file, an object URI ending in
    `.tar.gz` (downloaded to the cache), a registry version (`<group>/v<N>/`, approved
    only), a group (its latest approved version), or a local folder of a model's files
    (sdod's, or SageMaker's `model_algo_1-*` unpacked)."""
    text = str(uri)
    if text.endswith(".tar.gz"):
        if not is_s3(text):
            return local_path(text)
        return _cached(text, s3)
    base = text.rstrip("/")
    if exists(join_uri(base, APPROVAL), s3=s3):
        return resolve_model(join_uri(base, "model.tar.gz"), s3=s3)
    if VERSION.fullmatch(base.rsplit("/", 1)[-1]):
        raise UserError(
            f"{uri}: no approved model version here (no {APPROVAL}: a publish that did not "
            "finish leaves none)"
        )
    versions = list_versions(base, s3=s3)
    if versions:
        return resolve_model(versions[-1].model, s3=s3)
    if not is_s3(base) and (local_path(base) / "model.tar.gz").is_file():
        return local_path(base) / "model.tar.gz"
    if not is_s3(base) and (local_path(base) / "model.safetensors").is_file():
        return local_path(base)  # the unpacked files (SageMaker's /opt/ml/model)
    if not is_s3(base) and local_path(base).is_dir():
        from sdod.model.sagemaker import is_sagemaker_archive

        if is_sagemaker_archive(local_path(base)):  # SageMaker's own model.tar.gz, unpacked
            return local_path(base)
    raise UserError(
        f"{uri}: not a model.tar.gz, the folder of its files, a registry version "
        "(<group>/v<N>/) or a model group with an approved version"
    )


def approval_of(uri: str, *, s3: S3Options | None = None) -> dict[str, Any] | None:
    """The approval record of the registry version `uri` names (or of a group's latest
    version); None for a plain model.tar.gz."""
    text = str(uri)
    if text.endswith(".tar.gz"):
        return None
    base = text.rstrip("/")
    marker = join_uri(base, APPROVAL)
    if exists(marker, s3=s3):
        found: dict[str, Any] = json.loads(read_bytes(marker, s3=s3))
        return found
    versions = list_versions(base, s3=s3) if not VERSION.fullmatch(base.rsplit("/", 1)[-1]) else []
    return versions[-1].approval if versions else None
