"""Pipe mode: records streamed straight from an object (S3 or local) without downloading it.

SageMaker's Pipe mode feeds a channel as a stream; with `ShuffleConfig.Seed` it shuffles.
Here a `.rec` is read front to back through ranged GETs, and a seeded shuffle buffer
mixes records within a window (the full order would need the whole file).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import TypeVar

from sdod.data.recordio import Record, RecordStream, unpack_record
from sdod.storage import S3Options, open_stream

T = TypeVar("T")
DEFAULT_SHUFFLE_BUFFER = 1024


def shuffle_buffer(
    items: Iterator[T], *, seed: int, size: int = DEFAULT_SHUFFLE_BUFFER
) -> Iterator[T]:
    """Yield `items` in a seeded, windowed random order: same seed, same order."""
    rng = random.Random(seed)
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


def stream_records(
    uri: str,
    *,
    s3: S3Options | None = None,
    shuffle_seed: int | None = None,
    buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
    block_size: int = 8 << 20,
) -> Iterator[tuple[int, Record]]:
    """(offset, Record) for each record of the `.rec` at `uri`, read as a stream."""

    def in_order() -> Iterator[tuple[int, Record]]:
        with open_stream(uri, s3=s3, block_size=block_size) as f:
            stream = RecordStream(f, uri)
            while True:
                offset = stream.offset
                payload = stream.next()
                if payload is None:
                    return
                yield offset, unpack_record(payload, f"{uri} record at byte {offset}")

    if shuffle_seed is None:
        return in_order()
    return shuffle_buffer(in_order(), seed=shuffle_seed, size=buffer_size)
