"""Image bytes wherever they live: a file, an S3 object, or the image inside a RecordIO
record (`path.rec#offset`). No torch here: the annotation check, `convert` and `pack` read
images through this module."""

from __future__ import annotations

from pathlib import Path

from sdod.data.recordio import RecordStream, unpack_record
from sdod.errors import DataError
from sdod.storage import is_s3, process_s3_filesystem, read_bytes

S3_RECORD_BLOCK = 256 << 10  # one ranged GET holds a typical record whole


def read_image_bytes(uri: str) -> bytes:
    """Bytes of an image file, or of the image inside a `.rec` record (`path.rec#offset`);
    either may be on S3 (`s3://…`: one ranged GET per record, nothing downloaded whole)."""
    path, _, offset = uri.partition(".rec#")
    if offset:
        rec = f"{path}.rec"
        if is_s3(rec):
            fs = process_s3_filesystem()
            opened = fs.open(rec[len("s3://") :], "rb", block_size=S3_RECORD_BLOCK)
        else:
            opened = open(rec, "rb")  # noqa: SIM115 - closed by the with below
        with opened as f:
            f.seek(int(offset))
            payload = RecordStream(f, rec, int(offset)).next()
        if payload is None:
            raise DataError(f"{rec}: no record at byte {offset}")
        return unpack_record(payload).image
    if is_s3(uri):
        return read_bytes(uri, fs=process_s3_filesystem())
    return Path(uri).read_bytes()
