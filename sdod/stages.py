"""The pipeline's front door: one function per stage, called by the CLI and the DAGs.

ingest -> check -> pack -> train -> evaluate -> publish (DESIGN.md). Each takes typed
keyword arguments and returns a small JSON-able result; heavy machinery is imported
inside, so importing this module is cheap. Stages land here as they are built.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sdod.errors import UserError

if TYPE_CHECKING:
    from sdod.data.pack import PackResult
    from sdod.data.sampleset import SampleSet


def load_samples(
    *, images: str | None = None, annotations: str | None = None, manifest: str | None = None
) -> tuple[SampleSet, Path | None]:
    """Samples from image+JSON channels or a manifest, and the folder their paths are under."""
    if manifest and (images or annotations):
        raise UserError("give either --manifest or --images/--annotations, not both")
    if manifest:
        from sdod.data.manifest import read_manifest

        sampleset = read_manifest(manifest)
        if any(s.image.startswith("s3://") for s in sampleset.samples):
            raise UserError(
                f"{manifest} refers to images on S3; ingest them first (`sdod ingest`) and "
                "point the manifest at the local copies"
            )
        return sampleset, Path(manifest).parent
    if not (images and annotations):
        raise UserError("give both --images and --annotations (or --manifest, or --lst/--root)")
    from sdod.data.imagejson import read_image_json

    return read_image_json(images, annotations), Path(images)


def pack(
    *,
    out: str,
    images: str | None = None,
    annotations: str | None = None,
    manifest: str | None = None,
    lst: str | None = None,
    root: str | None = None,
    resize: int = 0,
    quality: int = 95,
    workers: int = 1,
) -> PackResult:
    """Pack a dataset into MXNet RecordIO `out.rec/.idx/.lst` (im2rec's detection layout)."""
    from sdod.data import pack as packing

    if lst:
        if images or annotations or manifest:
            raise UserError("give --lst with --root only")
        if not root:
            raise UserError("--lst needs --root, the folder the .lst paths are relative to")
        items = packing.items_from_lst(lst, root)
    else:
        sampleset, base = load_samples(images=images, annotations=annotations, manifest=manifest)
        items = packing.items_from_samples(sampleset, base)
    options = packing.PackOptions(resize=resize, quality=quality)
    return packing.pack(items, out, options=options, workers=workers)
