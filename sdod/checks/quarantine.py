"""The images the annotation gate quarantined: one writer (the check stage), one reader
(the pack stage), one key format.

An image is named two ways: by its quarantine key `<channel>/<sample key>` (the gate's
tables use the same key), and, for files a reader could not even parse, by its path
relative to the job root (`input/data/<channel>/<file>`), so a worker with another cache
folder matches it. `quarantine.json` is the list of entries as JSON objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from sdod.errors import UserError

FILE_NAME = "quarantine.json"


def quarantine_key(channel: str, sample_key: str) -> str:
    return f"{channel}/{sample_key}"


def relative_file(path: str | None, root: Path) -> str | None:
    """A quarantined file's path relative to the job root, so that a worker with another
    cache folder matches it."""
    if not path:
        return path
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path


@dataclass(frozen=True)
class Entry:
    key: str | None  # <channel>/<sample key>; None for a file no reader could parse
    file: str | None  # relative to the job root
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "file": self.file, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Quarantine:
    entries: tuple[Entry, ...] = ()

    @classmethod
    def of(cls, listed: Iterable[dict[str, Any]], root: Path | None = None) -> Quarantine:
        """From the gate's list (`CheckReport.quarantined`), files made relative to `root`."""
        return cls(tuple(
            Entry(q.get("key"), relative_file(q.get("file"), root) if root else q.get("file"),
                  tuple(q.get("reasons", ())))
            for q in listed
        ))  # fmt: skip

    def __len__(self) -> int:
        return len(self.entries)

    @cached_property
    def _keys(self) -> frozenset[str]:  # pack asks once per sample: built once
        return frozenset(e.key for e in self.entries if e.key)

    @cached_property
    def _files(self) -> frozenset[str]:
        return frozenset(e.file for e in self.entries if e.file)

    def drops(self, channel: str, sample_key: str) -> bool:
        return quarantine_key(channel, sample_key) in self._keys

    def lists_file(self, file: str | None) -> bool:
        return file is not None and file in self._files

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.entries]


def read_quarantine(uri: str | None, *, s3: Any = None) -> Quarantine:
    """The check stage's quarantine list (empty without one)."""
    if not uri:
        return Quarantine()
    from sdod.storage import read_bytes

    try:
        listed = json.loads(read_bytes(uri, s3=s3))
    except (FileNotFoundError, UserError, ValueError, RecursionError) as exc:
        raise UserError(
            f"quarantine list {uri} cannot be read ({exc}); run the check first"
        ) from None
    if not isinstance(listed, list) or not all(_entry_ok(q) for q in listed):
        raise UserError(
            f"{uri}: a quarantine list must be a JSON array of objects with 'key' and 'file' "
            "(text or null) and 'reasons' (a list of rule ids); re-run the check"
        )
    return Quarantine.of(listed)


def _entry_ok(q: Any) -> bool:
    text_or_null = (str, type(None))
    reasons = q.get("reasons", []) if isinstance(q, dict) else None
    return (
        isinstance(q, dict)
        and isinstance(q.get("key"), text_or_null)
        and isinstance(q.get("file"), text_or_null)
        and isinstance(reasons, list)
        and all(isinstance(r, str) for r in reasons)
    )
