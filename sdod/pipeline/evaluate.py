"""The evaluate stage: a model scored on a data set that may live in the object store.

A `.rec` given by URI is read from this machine's cache of objects (`<cache>/objects/`,
keyed by the URI; a sync, so an unchanged file is not fetched twice); everything else is
`sdod.evaluate.run`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sdod.storage import S3Options, cache_root, is_s3

if TYPE_CHECKING:
    from sdod.evaluate.run import EvaluateResult
    from sdod.serve.slicing import Slicing


def evaluate_model(
    *,
    model: str,
    rec: str | None = None,
    images: str | None = None,
    annotations: str | None = None,
    manifest: str | None = None,
    metric: str = "voc07",
    overlap_threshold: float | None = None,
    out: str | None = None,
    examples: int = 4,
    slicing: Slicing | None = None,
    s3: S3Options | None = None,
) -> EvaluateResult:
    """mAP of `model` on a `.rec` (a file or an object URI), image+JSON folders or a
    manifest; with `out`, its files there (see `sdod.evaluate.run.evaluate`)."""
    from sdod.evaluate.run import evaluate

    return evaluate(
        model=model,
        rec=str(local_rec(rec, s3=s3)) if rec else None,
        images=images,
        annotations=annotations,
        manifest=manifest,
        metric=metric,
        overlap_threshold=overlap_threshold,
        out=out,
        examples=examples,
        slicing=slicing,
        s3=s3,
    )


def local_rec(uri: str, *, s3: S3Options | None = None) -> Path:
    """The `.rec` at `uri` on this machine: the file itself, or the cached copy of its
    prefix (the .rec with its .idx and classes.json), brought up to date."""
    from sdod.transfer import sync_to_local

    if not is_s3(uri):
        return Path(uri)
    prefix, _, name = uri.rpartition("/")
    folder = cache_root() / "objects" / prefix[len("s3://") :]
    sync_to_local(prefix + "/", folder, s3=s3, progress=False)
    return folder / name
