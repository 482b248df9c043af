"""A training channel's samples, whatever its format: image+JSON, augmented manifest,
RecordIO (with `classes.json` beside it for the names), or Pipe mode streamed from S3.
Read by the annotation check, packing and training alike; no torch here."""

from __future__ import annotations

import json
from pathlib import Path

from sdod.data.sample import SampleSet
from sdod.errors import UserError
from sdod.joblayout import JobLayout
from sdod.jobspec import Channel, TrainingJobSpec


def samples_from_paths(
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


def read_channel(
    layout: JobLayout, spec: TrainingJobSpec, channel: Channel, *, strict: bool = True
) -> SampleSet:
    """Samples of a channel, whatever its format. `strict=False` skips problem files or
    records and lists them in `SampleSet.problems` for the annotation gate."""
    folder = layout.channel_dir(channel.name)
    if channel.streamed:  # Pipe or FastFile: read from the channel's URI, nothing downloaded
        from sdod.data.pipe import pipe_channel

        return pipe_channel(
            channel.uri,
            name=channel.name,
            augmented=channel.s3_data_type == "AugmentedManifestFile",
            attribute_names=channel.attribute_names or ("source-ref", "bounding-box"),
            manifest_dir=folder,
            strict=strict,
            gzip=channel.compression == "Gzip",
        )
    if not folder.is_dir():
        raise UserError(f"channel {channel.name}: {folder} is missing; run `sdod ingest` first")
    manifests = sorted(folder.rglob("*.manifest"))
    if channel.s3_data_type == "AugmentedManifestFile" or manifests:
        from sdod.data.manifest import read_manifest

        if len(manifests) != 1:
            raise UserError(
                f"channel {channel.name}: expected one .manifest file in {folder}, "
                f"found {len(manifests)}"
            )
        return read_manifest(
            manifests[0], channel.attribute_names or ("source-ref", "bounding-box"), strict=strict
        )
    recs = sorted(folder.rglob("*.rec"))
    if channel.content_type == "application/x-recordio" or recs:
        return _read_recs(channel, folder, recs, strict)
    annotations = spec.channel(f"{channel.name}_annotation")
    if annotations is None:
        raise UserError(
            f"channel {channel.name} holds images but there is no "
            f"{channel.name}_annotation channel (SageMaker's image format needs both)"
        )
    from sdod.data.imagejson import read_image_json

    return read_image_json(folder, layout.channel_dir(annotations.name), strict=strict)


def _read_recs(channel: Channel, folder: Path, recs: list[Path], strict: bool) -> SampleSet:
    """A RecordIO channel: its `.rec` files' samples, class names from `classes.json`."""
    from sdod.data.rec_samples import read_rec

    if not recs:
        raise UserError(
            f"channel {channel.name}: ContentType is application/x-recordio "
            f"but {folder} has no .rec file"
        )
    sets = [read_rec(rec, strict=strict) for rec in recs]
    names = folder / "classes.json"  # written by `pack_job`: RecordIO carries no names
    categories = (
        {int(k): str(v) for k, v in json.loads(names.read_text()).items()}
        if names.is_file()
        else {}
    )
    return SampleSet(
        [s for ss in sets for s in ss.samples],
        categories,
        [p for ss in sets for p in ss.problems],
    )
