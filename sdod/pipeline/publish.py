"""The publish stage: the gated promotion of a model into a registry's model group (the
gate, the version number and the records are `sdod.registry`'s)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdod.storage import S3Options

if TYPE_CHECKING:
    from sdod.registry import PublishResult


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
    """`model` as the next version of `group` if the evaluation's mAP passes the gate."""
    from sdod.registry import publish as promote

    return promote(
        model=model,
        group=group,
        evaluation=evaluation,
        min_map=min_map,
        force=force,
        training_job=training_job,
        data=data,
        s3=s3,
    )
