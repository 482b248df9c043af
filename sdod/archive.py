"""Untrusted tar archives, read as one bounded stream.

`tar_members` is how sdod reads any tar(.gz) it did not write: each header is shown to the
caller before a byte of its member is read (so a member's size is judged on its header),
the decompressed stream stops at a cap (a bomb whose headers lie stops there), extended
headers (pax, GNU long names) are bounded before tarfile reads them into memory, and a
broken archive is a DataError naming it. Nothing is extracted to disk.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Callable, Iterator
from os import PathLike
from tarfile import ReadError
from typing import IO

from sdod.errors import DataError

MAX_EXTENDED_HEADER = 64 << 10  # a pax or GNU long-name header: a few hundred bytes
EXTENDED_TYPES = (b"L", b"K", b"x", b"g", b"X")  # GNU long name/link, pax, Solaris
RULE = "archive_bounded"


class _TarInfo(tarfile.TarInfo):
    """Refuses a large pax or GNU long-name header before tarfile reads it into memory."""

    def _proc_member(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in EXTENDED_TYPES and self.size > MAX_EXTENDED_HEADER:
            what = f"an extended header of {self.size} bytes, over the limit of "
            raise ReadError(what + str(MAX_EXTENDED_HEADER))
        return super()._proc_member(tarfile)  # type: ignore[misc]


class _Bounded(io.RawIOBase):
    """A stream that refuses to yield more than `limit` bytes (the decompressed archive)."""

    def __init__(self, inner: IO[bytes], limit: int, where: str) -> None:
        self.inner, self.limit, self.where, self.total = inner, limit, where, 0

    def read(self, size: int | None = -1) -> bytes:
        left = self.limit + 1 - self.total
        data = self.inner.read(left if size is None or size < 0 else min(size, left))
        self.total += len(data)
        if self.total > self.limit:
            reason = f"decompresses to more than {self.limit} bytes (a bomb?); refusing it"
            raise DataError(f"{self.where}: {reason}", rule=RULE, where=self.where, reason=reason)
        return data


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    """The archive's tar stream: gzip (SageMaker's) or plain tar."""
    magic, _ = raw.read(2), raw.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def read_all(f: IO[bytes]) -> bytes:
    """A member's bytes, read in chunks (tarfile's stream would hold one whole read twice)."""
    buf = io.BytesIO()
    while chunk := f.read(1 << 20):
        buf.write(chunk)
    return buf.getvalue()


def tar_members(
    path: str | PathLike[str],
    where: str,
    wanted: Callable[[tarfile.TarInfo], bool],
    *,
    max_stream_bytes: int,
) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """Each member of a tar(.gz) with its bytes when `wanted` takes it (None otherwise), read
    as one bounded stream: `wanted` sees the header (and may raise) before a byte of the
    member is read; at most `max_stream_bytes` are decompressed and an extended header over
    MAX_EXTENDED_HEADER is refused; a broken archive is a DataError."""
    try:
        with open(path, "rb") as raw, _decompressed(raw) as inner:
            stream = _Bounded(inner, max_stream_bytes, where)
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=_TarInfo) as tar:
                for member in tar:
                    f = tar.extractfile(member) if wanted(member) else None
                    yield member, None if f is None else read_all(f)
    except FileNotFoundError:
        raise DataError(f"{where}: no such archive") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError, RecursionError) as exc:
        raise DataError(f"{where}: not a readable .tar.gz ({exc})") from None
