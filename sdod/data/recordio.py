"""MXNet RecordIO, byte-compatible with `mx.recordio.MXIndexedRecordIO` and `im2rec`.

Framing (dmlc-core `recordio.cc`): each physical chunk is uint32 LE magic `0xced7230a`,
uint32 LE `lrec = (cflag << 29) | length`, the data, zero padding to 4 bytes. A logical
record is one chunk (cflag 0) unless its payload contains the magic at a 4-byte aligned
offset: the writer then splits it there (cflag 1 first, 2 middle, 3 last) and drops that
magic, and the reader re-inserts it between the parts.

Payload (`mx.recordio.pack`): IRHeader struct `<IfQQ` (flag, label, id, id2); if flag > 0,
`flag` float32 labels follow and header.label is 0.0; then the image bytes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from sdod.errors import DataError
from sdod.storage import temporary_sibling

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
MAX_RECORD = 1 << 29
IR_HEADER = struct.Struct("<IfQQ")
_CHUNK_HEAD = struct.Struct("<II")


@dataclass(frozen=True)
class Record:
    """One IRHeader record: `label` is float32 `[flag]` when flag > 0, else a 0-d scalar."""

    flag: int
    label: npt.NDArray[np.float32]
    id: int
    id2: int
    image: bytes


def record_head(label: float | npt.ArrayLike, *, id: int = 0, id2: int = 0) -> bytes:
    """IRHeader plus the label vector: everything of a payload before the image bytes.

    Its length is always a multiple of 4, which `frame_parts` relies on.
    """
    if np.ndim(label) == 0:
        return IR_HEADER.pack(0, float(label), id, id2)  # type: ignore[arg-type]
    vector = np.asarray(label, dtype="<f4").reshape(-1)
    return IR_HEADER.pack(vector.size, 0.0, id, id2) + vector.tobytes()


def pack_record(label: float | npt.ArrayLike, image: bytes, *, id: int = 0, id2: int = 0) -> bytes:
    """`mx.recordio.pack`: a scalar label goes into the header, a vector after it."""
    return record_head(label, id=id, id2=id2) + image


def unpack_record(payload: bytes, where: str = "record") -> Record:
    """`mx.recordio.unpack`; DataError when the payload is too short for its header."""
    if len(payload) < IR_HEADER.size:
        raise DataError(f"{where}: {len(payload)} bytes is shorter than the 24-byte IRHeader")
    flag, scalar, rid, rid2 = IR_HEADER.unpack_from(payload)
    start = IR_HEADER.size
    if flag > 0:
        end = start + 4 * flag
        if end > len(payload):
            raise DataError(f"{where}: IRHeader says {flag} labels, but the record ends first")
        label = np.frombuffer(payload, dtype="<f4", count=flag, offset=start).astype(np.float32)
        start = end
    else:
        label = np.array(scalar, dtype=np.float32)
    return Record(flag, label, rid, rid2, payload[start:])


def frame(payload: bytes) -> bytes:
    """The bytes `RecordIOWriter::WriteRecord` puts on disk for one logical record."""
    size = len(payload)
    if size >= MAX_RECORD:
        raise DataError(f"record of {size} bytes is over RecordIO's 2^29-byte limit")
    parts = []
    start = 0
    pos = payload.find(MAGIC_BYTES)
    while pos != -1 and pos + 4 <= (size & ~3):
        if pos % 4 == 0:
            cflag = 1 if start == 0 else 2
            parts.append(_CHUNK_HEAD.pack(MAGIC, (cflag << 29) | (pos - start)))
            parts.append(payload[start:pos])
            start = pos + 4
            pos = payload.find(MAGIC_BYTES, start)
        else:
            pos = payload.find(MAGIC_BYTES, pos + 1)
    cflag = 3 if start else 0
    parts.append(_CHUNK_HEAD.pack(MAGIC, (cflag << 29) | (size - start)))
    parts.append(payload[start:])
    parts.append(b"\0" * (-size % 4))
    return b"".join(parts)


def _has_aligned_magic(data: bytes) -> bool:
    words = np.frombuffer(data, dtype="<u4", count=len(data) // 4)
    return bool((words == MAGIC).any())


def frame_parts(head: bytes, body: bytes) -> list[bytes]:
    """`frame(head + body)` as a list of byte strings, without copying `body` when it holds
    no aligned magic (the usual case). `len(head)` must be a multiple of 4."""
    if len(head) % 4:
        raise ValueError("head length must be a multiple of 4")
    size = len(head) + len(body)
    head_magic = MAGIC_BYTES in head and _has_aligned_magic(head)  # `in` is cheap on 24+ bytes
    if size >= MAX_RECORD or head_magic or _has_aligned_magic(body):
        return [frame(head + body)]
    return [_CHUNK_HEAD.pack(MAGIC, size), head, body, b"\0" * (-size % 4)]


def chunk_head(head: bytes, where: str, offset: int) -> tuple[int, int]:
    """(continuation flag, length) of the 8-byte chunk header read at `offset`; DataError
    for a truncated header or a missing magic."""
    if len(head) < 8:
        raise DataError(f"{where}: file ends inside a record header at byte {offset} (truncated)")
    magic, lrec = _CHUNK_HEAD.unpack(head)
    if magic != MAGIC:
        raise DataError(
            f"{where}: no RecordIO magic at byte {offset} (found 0x{magic:08x}); "
            "the file is not MXNet RecordIO, or an .idx offset is wrong"
        )
    return lrec >> 29, lrec & LENGTH_MASK


class RecordStream:
    """Reads logical records one after another from any binary file object, seekable or not
    (an S3 stream in Pipe mode); `offset` is the byte position of the next record."""

    def __init__(self, f: BinaryIO, where: str, offset: int = 0) -> None:
        self.f, self.where, self.offset = f, where, offset

    def _read(self, n: int) -> bytes:
        data = self.f.read(n) if n else b""
        self.offset += len(data)
        return data

    def next(self) -> bytes | None:
        """One logical record's payload; None at a clean end of file."""
        parts: list[bytes] = []
        while True:
            offset = self.offset
            head = self._read(8)
            if not head and not parts:
                return None
            cflag, length = chunk_head(head, self.where, offset)
            data = self._read(length)
            if len(data) < length:
                raise DataError(
                    f"{self.where}: record at byte {offset} is truncated "
                    f"({len(data)} of {length} bytes)"
                )
            self._read(-length % 4)
            if cflag == 0 and not parts:
                return data
            if (cflag == 1) != (not parts) or cflag == 0:
                raise DataError(
                    f"{self.where}: broken multi-part record at byte {offset} (cflag {cflag})"
                )
            parts.append(data)
            if cflag == 3:
                return MAGIC_BYTES.join(parts)


def scan_rec(path: str | Path, head_bytes: int = 4096) -> Iterator[tuple[int, int, bytes]]:
    """(offset, payload length, head) for every record of a .rec file, in file order: only
    the first `head_bytes` of each payload are read (the IRHeader, the label and the start
    of the image), the rest is skipped with a seek, so memory and reads do not grow with
    the image bytes. The framing is checked as `iter_rec` checks it."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        offset = 0
        while offset < size:
            start, head, total, parts = offset, b"", 0, 0
            while True:
                f.seek(offset)
                cflag, length = chunk_head(f.read(8), str(path), offset)
                if offset + 8 + length > size:
                    raise DataError(
                        f"{path}: record at byte {offset} is truncated "
                        f"({size - offset - 8} of {length} bytes)"
                    )
                if (cflag in (0, 1)) != (parts == 0):
                    raise DataError(
                        f"{path}: broken multi-part record at byte {offset} (cflag {cflag})"
                    )
                if parts == 0:
                    head = f.read(min(length, head_bytes))
                total += length + (4 if parts else 0)  # parts rejoin with the magic between
                parts += 1
                offset += 8 + length + (-length % 4)
                if cflag in (0, 3):
                    break
            yield start, total, head


def iter_rec(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(offset, payload) for every record of a .rec file, in file order."""
    path = Path(path)
    with path.open("rb") as f:
        stream = RecordStream(f, str(path))
        while True:
            offset = stream.offset
            payload = stream.next()
            if payload is None:
                return
            yield offset, payload


def _idx_pair(line: str) -> tuple[int, int] | None:
    try:
        key, offset = (int(f) for f in line.split("\t"))  # ValueError unless two fields
    except ValueError:
        return None
    return (key, offset) if key >= 0 and offset >= 0 else None


def read_idx(path: str | Path) -> list[tuple[int, int]]:
    """`.idx` lines `key\\toffset` as (key, offset) pairs; DataError names a bad line, and
    an offset listed twice (two keys for one record)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: an .idx is text, but byte {exc.start} is not UTF-8") from None
    pairs = []
    lines: dict[int, int] = {}  # offset -> the line that lists it
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        pair = _idx_pair(line)
        if pair is None:
            raise DataError(f"{path}:{lineno}: expected 'key<TAB>offset', got {line!r}")
        if pair[1] in lines:
            raise DataError(
                f"{path}:{lineno}: offset {pair[1]} is listed twice (also on line "
                f"{lines[pair[1]]}): two keys for one record; rebuild the .idx with its .rec "
                "(`sdod pack` writes both)"
            )
        lines[pair[1]] = lineno
        pairs.append(pair)
    return pairs


class RecordWriter:
    """Appends framed records to `PREFIX.rec` and `key\\toffset` lines to `PREFIX.idx`.

    Both files are written under temporary names and renamed on `close()`, so an
    interrupted pack never leaves a .rec that looks complete.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else None
        # unique temporary names: two packers of one prefix never write into each other's
        self._rec_tmp = temporary_sibling(self.rec_path)
        self._idx_tmp = temporary_sibling(self.idx_path) if self.idx_path else None
        self.rec_path.parent.mkdir(parents=True, exist_ok=True)
        self._rec = self._rec_tmp.open("wb", buffering=0)  # records go out with one writev
        self._idx = self._idx_tmp.open("w") if self._idx_tmp else None
        self.offset = 0
        self.count = 0

    def write(self, key: int, payload: bytes) -> int:
        """Write one record; return its offset."""
        return self.write_framed(key, [frame(payload)])

    def write_framed(self, key: int, parts: list[bytes]) -> int:
        """Append already framed bytes (`frame` / `frame_parts` output); return the offset."""
        offset = self.offset
        size = sum(map(len, parts))
        written = os.writev(self._rec.fileno(), parts)
        if written != size:  # a short write (rare; e.g. a signal): write the rest plainly
            self._rec.write(b"".join(parts)[written:])
        self.offset += size
        if self._idx:
            self._idx.write(f"{key}\t{offset}\n")
        self.count += 1
        return offset

    def close(self) -> None:
        self._rec.close()
        if self._idx:
            self._idx.close()
        os.replace(self._rec_tmp, self.rec_path)
        if self.idx_path and self._idx_tmp:
            os.replace(self._idx_tmp, self.idx_path)

    def abort(self) -> None:
        self._rec.close()
        self._rec_tmp.unlink(missing_ok=True)
        if self._idx and self._idx_tmp:
            self._idx.close()
            self._idx_tmp.unlink(missing_ok=True)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
