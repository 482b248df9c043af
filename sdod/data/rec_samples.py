"""Reading MXNet `.rec` (+ `.idx`) files: records, Samples, and what is wrong with them."""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sdod.data.problems import Problems
from sdod.data.rec_label import decode
from sdod.data.recordio import Record, RecordStream, iter_rec, read_idx, scan_rec, unpack_record
from sdod.data.sample import Sample, SampleSet
from sdod.errors import DataError

DEFAULT_LABEL_WIDTH = 350  # SageMaker's default `label_width`
PIXEL_COORD_LIMIT = 1.5  # normalised coordinates above this are pixels, not 0..1
HEAD_BYTES = 4096  # IRHeader, label and the image's header, for nearly every JPEG and PNG


def check_idx(rec: Path, idx: Path, offsets: list[int]) -> list[int]:
    """Keys in record order from `.idx`; DataError if it disagrees with the .rec's records."""
    pairs = read_idx(idx)
    starts = set(offsets)
    for lineno, (key, offset) in enumerate(pairs, start=1):
        if offset not in starts:
            raise DataError(
                f"{idx}:{lineno}: key {key} points to byte {offset}, which is not the start of "
                f"a record in {rec.name}; the .idx belongs to another .rec: rebuild it "
                "(`sdod pack` writes both)"
            )
    if len(pairs) != len(offsets):
        raise DataError(
            f"{idx}: lists {len(pairs)} records but {rec.name} holds {len(offsets)}; "
            "rebuild the .idx together with the .rec"
        )
    by_offset = {offset: key for key, offset in pairs}
    return [by_offset[o] for o in offsets]


def _full_payload(rec: Path, offset: int) -> bytes:
    with rec.open("rb") as f:
        f.seek(offset)
        payload = RecordStream(f, str(rec), offset).next()
    if payload is None:
        raise DataError(f"{rec}: no record at byte {offset}")
    return payload


def read_records(
    rec: str | Path, idx: str | Path | None = None, *, heads_only: bool = False
) -> Iterator[tuple[int, int, Record]]:
    """(key, offset, Record) for each record; `idx` defaults to the sibling `.idx` if present.

    One pass, one record at a time, so memory does not grow with the file; framing errors
    and an `.idx` that does not match raise DataError (a truncated file fails at its end).
    `heads_only`: each Record's `image` is only the start of the image (enough for its
    header: size and format), read with the label while the rest is skipped with a seek;
    a record whose header needs more is read whole.
    """
    rec = Path(rec)
    if not rec.is_file():
        raise DataError(f"RecordIO file {rec} does not exist")
    idx = Path(idx) if idx else rec.with_suffix(".idx")
    by_offset = {offset: key for key, offset in read_idx(idx)} if idx.is_file() else None
    if heads_only:
        scanned: Iterator[tuple[int, int, bytes]] = scan_rec(rec, HEAD_BYTES)
    else:
        scanned = ((o, len(p), p) for o, p in iter_rec(rec))
    offsets = []
    for offset, length, payload in scanned:
        where = f"{rec} record at byte {offset}"
        try:
            record = unpack_record(payload, where)
            if len(payload) < length:
                image_size(record.image, where)  # the head holds the image's header
        except DataError:
            if len(payload) == length:
                raise
            record = unpack_record(_full_payload(rec, offset), where)
        listed = by_offset.get(offset) if by_offset is not None else record.id
        if listed is None:  # say which .idx line is wrong
            check_idx(rec, idx, [o for o, _, _ in scan_rec(rec, head_bytes=0)])
            raise DataError(f"{idx}: has no entry for the record at byte {offset} of {rec.name}")
        key = listed
        offsets.append(offset)
        yield key, offset, record
    if by_offset is not None:
        check_idx(rec, idx, offsets)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read straight from a JPEG's SOF or a PNG's IHDR (microseconds, where
    Pillow takes a hundred); None when the bytes are neither, or end before the header."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return (width, height) if width and height else None
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def image_size(data: bytes, where: str) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    found = _header_size(data)
    if found is not None:
        return found
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    # Pillow's plugins raise more than OSError on hostile headers (DecompressionBombError,
    # ValueError, struct.error, ...): any failure to read a header is the record's fault
    except Exception as exc:
        raise DataError(
            f"{where}: the image bytes do not decode ({exc})", rule="image_decodes", where=where
        ) from None


def read_rec(rec: str | Path, idx: str | Path | None = None, *, strict: bool = True) -> SampleSet:
    """Samples from a detection `.rec`; boxes back in pixels (as GluonCV returns them).

    A record whose label or image header is bad raises DataError; with `strict=False` it is
    skipped and listed in `SampleSet.problems` instead (broken framing always raises: the
    records after it cannot be found)."""
    items = (
        (str(rec), key, offset, record)
        for key, offset, record in read_records(rec, idx, heads_only=True)
    )
    return samples_from_records(items, f"RecordIO file {rec}", strict=strict)


def samples_from_records(
    items: Iterable[tuple[str, int, int, Record]], context: str, *, strict: bool = True
) -> SampleSet:
    """Samples from `(rec, key, offset, Record)`: boxes in pixels, each image addressed as
    `rec#offset` (a path or an S3 URI); a bad label or image header raises, or with
    `strict=False` is skipped and listed in `SampleSet.problems`."""
    samples = []
    problems = Problems(context)
    for rec, key, offset, record in items:
        where = f"{rec} record {key} (byte {offset})"
        try:
            label = decode(record.label, where)
            width, height = image_size(record.image, where)
        except DataError as exc:
            if strict:
                raise
            problems.add_error(exc, where, exc.rule or "annotation_valid")
            continue
        scale = np.array([width, height, width, height], dtype=np.float32)
        samples.append(
            Sample(
                str(key),
                f"{rec}#{offset}",
                width,
                height,
                label.boxes * scale,
                label.classes.astype(np.int64),
            )
        )
    return SampleSet(samples, problems=problems.records)


@dataclass
class RecDiagnosis:
    records: int = 0
    without_boxes: int = 0
    pixel_like: list[int] = field(default_factory=list)
    max_label_len: int = 0
    densest_key: int | None = None

    def findings(self, label_width: int) -> list[str]:
        """One clear sentence per problem, each with its fix."""
        out = []
        if self.records and self.without_boxes == self.records:
            out.append(
                "this .rec carries no boxes (each label is a single number): it was made by "
                "im2rec without --pack-label; re-run im2rec with --pack-label or use `sdod pack`"
            )
        elif self.without_boxes:
            out.append(f"{self.without_boxes} record(s) carry no boxes (scalar label)")
        if self.pixel_like:
            keys = ", ".join(map(str, self.pixel_like[:5]))
            out.append(
                f"{len(self.pixel_like)} record(s) have coordinates above 1 (e.g. keys {keys}): "
                "they look like pixels, but RecordIO labels must be normalised to 0..1; divide "
                "x by the image width and y by its height in the .lst and re-pack"
            )
        if self.max_label_len > label_width:
            out.append(
                f"record {self.densest_key} has a label of {self.max_label_len} numbers, more "
                f"than label_width={label_width}: set the label_width hyperparameter to at "
                f"least {self.max_label_len}"
            )
        return out


def dump_rows(rec: str | Path, diagnosis: RecDiagnosis, limit: int | None = None) -> Iterator[dict]:
    """One dict per record (key, flag, label, id, id2, image_len, image_sha256)."""
    for n, (key, _offset, record) in enumerate(read_records(rec)):
        if limit is not None and n >= limit:
            return
        label = record.label.reshape(-1)
        diagnosis.records += 1
        if record.flag == 0 or label.size < 2:
            diagnosis.without_boxes += 1
        else:
            if label.size > diagnosis.max_label_len:
                diagnosis.max_label_len, diagnosis.densest_key = label.size, key
            try:
                boxes = decode(label, str(key)).boxes
            except DataError:
                boxes = np.zeros((0, 4), np.float32)
            if boxes.size and float(boxes.max()) > PIXEL_COORD_LIMIT:
                diagnosis.pixel_like.append(key)
        yield {
            "key": key,
            "flag": record.flag,
            "label": [float(v) for v in label.tolist()],
            "id": record.id,
            "id2": record.id2,
            "image_len": len(record.image),
            "image_sha256": hashlib.sha256(record.image).hexdigest(),
        }
