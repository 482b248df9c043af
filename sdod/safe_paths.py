"""Names from outside turned into local paths: object keys below a prefix, archive
members, list-file paths. `inside` is the one way sdod does it; a name that could reach
outside its folder is a DataError naming it (rule `unsafe_name`).
"""

from __future__ import annotations

import os
from pathlib import Path

from sdod.errors import DataError


def safe_relative(name: str, what: str = "object key") -> str:
    """`name` (an object key below a prefix, an archive member, a list-file path: anything
    read from outside) as a clean relative POSIX path, or DataError naming it.

    Refused: empty names, absolute paths, `..`, `.` or empty components, and control
    characters (NUL, newlines). S3 allows every one of these in a key; none may
    become a file outside the folder it is synced, copied or extracted into."""
    text = str(name)
    parts = text.split("/")
    reason = None
    if not text:
        reason = "is empty"
    elif text.startswith("/"):
        reason = "is an absolute path"
    elif any(ord(ch) < 32 or ch == "\x7f" for ch in text):
        reason = "holds a control character (NUL, newline, ...)"
    elif any(part in ("", ".", "..") for part in parts):
        reason = "has an empty, '.' or '..' component"
    if reason:
        raise DataError(
            f"{what} {text!r} {reason}: it could name a file outside its folder; refusing it "
            "(rename or delete that object)",
            rule="unsafe_name",
            where=text,
            reason=reason,
        )
    return text


def inside(root: str | os.PathLike[str], name: str, what: str = "object key") -> Path:
    """The path of the untrusted relative `name` under the folder `root`: checked by
    `safe_relative`, and refused (DataError) when a symbolic link already in `root` would
    take it outside. The one way sdod turns a name from outside into a local path."""
    base = Path(root)
    target = base / safe_relative(name, what)
    real_base = os.path.realpath(base)
    real = os.path.realpath(target)
    if os.path.commonpath([real_base, real]) != real_base:
        raise DataError(
            f"{what} {name!r} resolves outside {base} (through a symbolic link); refusing it",
            rule="unsafe_name",
            where=str(name),
            reason="resolves outside its folder",
        )
    return target
