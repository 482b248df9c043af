"""Pipe mode: records streamed straight from an object (S3 or local) without downloading it.

SageMaker's Pipe mode feeds a channel as a stream; with `ShuffleConfig.Seed` it shuffles.
Here a `.rec` is read front to back through ranged GETs.

Training in Pipe mode (`pipe_channel`): one streaming pass over the channel's `.rec`
objects keeps each record's label and its place (`s3://…/x.rec#offset`), never the image
bytes; the data loader then fetches each image with one ranged GET when a batch needs it.
A manifest channel keeps its (small) manifest and fetches each `source-ref` the same way.
Nothing is downloaded whole, and the epochs, batches, shuffling and distributed split are
those of File mode: the train channel's `ShuffleConfig.Seed` seeds the batch order (the
whole channel, reshuffled each epoch), not a window of the stream.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from sdod.data.rec_samples import samples_from_records
from sdod.data.recordio import Record, RecordStream, unpack_record
from sdod.data.sample import SampleSet
from sdod.errors import UserError
from sdod.storage import S3Options, atomic_write_bytes, open_stream, read_bytes
from sdod.transfer import list_objects


def stream_records(
    uri: str,
    *,
    s3: S3Options | None = None,
    block_size: int = 8 << 20,
) -> Iterator[tuple[int, Record]]:
    """(offset, Record) for each record of the `.rec` at `uri`, read as a stream."""
    with open_stream(uri, s3=s3, block_size=block_size) as f:
        stream = RecordStream(f, uri)
        while True:
            offset = stream.offset
            payload = stream.next()
            if payload is None:
                return
            yield offset, unpack_record(payload, f"{uri} record at byte {offset}")


def pipe_channel(
    uri: str,
    *,
    name: str,
    augmented: bool,
    attribute_names: Sequence[str],
    manifest_dir: Path,
    strict: bool = True,
    s3: S3Options | None = None,
    gzip: bool = False,
) -> SampleSet:
    """Samples of a Pipe-mode channel at `uri` (a prefix or one object), streamed;
    `gzip`: the augmented manifest is gzip-compressed (CompressionType Gzip)."""
    listing = list_objects(uri, s3)
    single = len(listing) == 1 and uri.rstrip("/").endswith("/" + next(iter(listing)))
    base = uri.rsplit("/", 1)[0] if single else uri.rstrip("/")
    manifests = sorted(k for k in listing if k.endswith((".manifest", ".manifest.gz")))
    if manifests or augmented:
        if len(manifests) != 1:
            raise UserError(
                f"channel {name}: expected one .manifest under {uri}, found {len(manifests)}"
            )
        from sdod.data.manifest import read_manifest

        source = f"{base}/{manifests[0]}"
        data = read_bytes(source, s3=s3)
        if gzip:
            import gzip as gz

            try:
                data = gz.decompress(data)
            except (OSError, EOFError) as exc:
                raise UserError(
                    f"channel {name}: CompressionType is Gzip but {source} is not gzip ({exc})"
                ) from None
        local = atomic_write_bytes(manifest_dir / Path(manifests[0]).name.removesuffix(".gz"), data)
        folder = source.rsplit("/", 1)[0]
        return read_manifest(local, attribute_names, strict=strict, base=folder)
    recs = sorted(k for k in listing if k.endswith(".rec"))
    if not recs:
        raise UserError(
            f"channel {name}: Pipe mode streams RecordIO (.rec) or an augmented manifest, "
            f"and {uri} holds neither"
        )
    items = (
        (f"{base}/{rec}", record.id, offset, record)
        for rec in recs
        for offset, record in stream_records(f"{base}/{rec}", s3=s3)
    )
    return samples_from_records(items, f"channel {name}", strict=strict)
