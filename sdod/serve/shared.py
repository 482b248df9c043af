"""Connections open at once across all the server's worker processes, so `--max-connections`
bounds the server, not each worker.

With several workers the count lives in a small file mapped into each of them: one slot
(pid, open connections) per worker, read and changed under an exclusive `flock`. A worker
claims a free slot, or the slot of a worker that died (the one that replaces it), so a dead
worker's connections stop counting as soon as it is replaced. With one worker the count is
a plain number.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

SLOT = struct.Struct("<qq")  # pid, open connections
SLOTS = 256  # workers at most


def create_count_file(folder: str | Path) -> str:
    """A zeroed count file in `folder` for the workers to share; its path."""
    path = Path(folder) / "connections"
    path.write_bytes(bytes(SLOT.size * SLOTS))
    return str(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ConnectionCount:
    """Open connections of this server (`path`: the shared count file, or None for a
    server of one process)."""

    def __init__(self, path: str | None = None) -> None:
        self.local = 0
        self.path = path
        if path:
            self.fd = os.open(path, os.O_RDWR)
            self.map = mmap.mmap(self.fd, SLOT.size * SLOTS)
            self.slot = self._claim()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _claim(self) -> int:
        with self._locked():
            for index in range(SLOTS):
                pid, _ = SLOT.unpack_from(self.map, index * SLOT.size)
                if pid == 0 or pid == os.getpid() or not _alive(pid):
                    SLOT.pack_into(self.map, index * SLOT.size, os.getpid(), 0)
                    return index
        raise RuntimeError(f"more than {SLOTS} workers share {self.path}")

    def _add(self, delta: int) -> None:
        offset = self.slot * SLOT.size
        pid, count = SLOT.unpack_from(self.map, offset)
        SLOT.pack_into(self.map, offset, pid, max(0, count + delta))

    def total(self) -> int:
        if not self.path:
            return self.local
        return sum(SLOT.unpack_from(self.map, i * SLOT.size)[1] for i in range(SLOTS))

    def try_open(self, limit: int) -> bool:
        """Count one more connection unless `limit` are open already."""
        if not self.path:
            if self.local >= limit:
                return False
            self.local += 1
            return True
        with self._locked():
            if self.total() >= limit and not self._free_dead():
                return False
            self._add(1)
            return True

    def _free_dead(self) -> bool:
        """Zero the slots of workers that died (before their replacement claimed them);
        whether that freed any count. Called under the lock, at the limit only."""
        freed = False
        for index in range(SLOTS):
            pid, count = SLOT.unpack_from(self.map, index * SLOT.size)
            if pid and count and pid != os.getpid() and not _alive(pid):
                SLOT.pack_into(self.map, index * SLOT.size, 0, 0)
                freed = True
        return freed

    def close(self) -> None:
        """One counted connection ended."""
        if not self.path:
            self.local = max(0, self.local - 1)
            return
        with self._locked():
            self._add(-1)
