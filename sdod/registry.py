"""The model registry: gated, numbered, approved versions of a model group.

In the spirit of SageMaker's Model Registry (a model package group with versions and an
approval status), kept as plain objects in the store:

```
<registry>/<group>/v<N>/model.tar.gz     the artifact, as trained
<registry>/<group>/v<N>/metrics.json     the evaluation that gated it
<registry>/<group>/v<N>/approval.json    written last: the version exists once this does
```

A version without `approval.json` (an upload that failed half-way) is invisible: nothing
lists, resolves or serves it, and the next publish replaces its files. Each object is
written whole (an S3 PUT, or a local temporary file and a rename), so `approval.json` is
either absent or complete.
"""

from __future__ import annotations

import json
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
    exists,
    fetch_file,
    is_s3,
    join_uri,
    local_path,
    read_bytes,
    remove_tree,
    upload_file,
    write_bytes,
)
from sdod.transfer import list_objects

APPROVAL = "approval.json"
VERSION = re.compile(r"^v([1-9][0-9]*)$")


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
        m = VERSION.match(head)
        if m and rest:
            found.setdefault(int(m.group(1)), set()).add(rest)
    return found


def list_versions(group: str, *, s3: S3Options | None = None) -> list[Version]:
    """The approved versions of a group, oldest first."""
    out = []
    for number, names in sorted(_version_numbers(group, s3).items()):
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
    score = metrics.get("mAP")
    return (float(score) if score is not None else None), metrics


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
    without one, the training job's validation mAP, and the record says so): at least
    `min_map`, and not below the latest approved version unless `force`. A refusal raises
    UserError and writes nothing.
    """
    from sdod.artifact import read_artifact

    local = resolve_model(model, s3=s3)
    artifact = read_artifact(local)  # validates before anything is written
    training_map = artifact.metrics.get("validation:mAP")
    if evaluation:
        score, metrics = _evaluation_map(evaluation, s3)
        source = "evaluation"
    else:
        score, metrics, source = training_map, dict(artifact.metrics), "training"
    what = f"{source} mAP {score}"
    if min_map is not None and (score is None or score < min_map):
        raise UserError(f"{what} is below min_map {min_map}; nothing published to {group}")
    approved = list_versions(group, s3=s3)
    latest = approved[-1] if approved else None
    previous = latest.map if latest else None
    if previous is not None and score is not None and score < previous and not force:
        raise UserError(
            f"{what} is below version v{latest.number}'s {previous} in {group}; nothing "  # type: ignore[union-attr]
            "published (force it to publish anyway)"
        )
    number = (latest.number if latest else 0) + 1
    uri = join_uri(group, f"v{number}") + "/"
    remove_tree(uri, s3=s3)  # leftovers of a publish that failed half-way
    upload_file(local, join_uri(uri, "model.tar.gz"), s3=s3)
    write_bytes(join_uri(uri, "metrics.json"), json.dumps(metrics, indent=2).encode(), s3=s3)
    forced = bool(force and previous is not None and score is not None and score < previous)
    approval = _approval(group, number, score, source, metrics, training_map)
    approval.update(
        training_job=training_job, source_model=model, data=data or {},
        previous_version=latest.number if latest else None, previous_mAP=previous, forced=forced,
    )  # fmt: skip
    write_bytes(join_uri(uri, APPROVAL), json.dumps(approval, indent=2).encode(), s3=s3)
    return PublishResult(
        True, uri, number, score, previous, "published", join_uri(uri, "model.tar.gz"), approval
    )


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
    only), or a group (its latest approved version)."""
    text = str(uri)
    if text.endswith(".tar.gz"):
        if not is_s3(text):
            return local_path(text)
        return _cached(text, s3)
    base = text.rstrip("/")
    if exists(join_uri(base, APPROVAL), s3=s3):
        return resolve_model(join_uri(base, "model.tar.gz"), s3=s3)
    if VERSION.match(base.rsplit("/", 1)[-1]):
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
    raise UserError(
        f"{uri}: not a model.tar.gz, a registry version (<group>/v<N>/) or a model group "
        "with an approved version"
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
    versions = list_versions(base, s3=s3) if not VERSION.match(base.rsplit("/", 1)[-1]) else []
    return versions[-1].approval if versions else None
