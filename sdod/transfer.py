"""Listings, syncs and tree copies between object stores and local folders.

`sync_to_local` brings a prefix (or one object, or a manifest's objects) into a folder and
transfers only what changed (size + ETag); `copy_tree` snapshots a prefix or folder to
another (S3 to S3 by server-side copy); `upload_tree` sends a local folder up. Single
objects, URIs and atomic local writes are `sdod.storage`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdod.errors import UserError
from sdod.safe_paths import inside, safe_relative
from sdod.storage import (
    S3Options,
    _s3_errors,
    atomic_write_json,
    is_s3,
    local_path,
    read_bytes,
    s3_filesystem,
    temporary_sibling,
    with_retries,
)

# --- listing and syncing -------------------------------------------------------------


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    version: str  # S3 ETag, or size+mtime for local files


@dataclass(frozen=True)
class SyncResult:
    source: str
    dest: str
    objects: int
    downloaded: int
    skipped: int
    removed: int
    bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_objects(uri: str, s3: S3Options | None = None) -> dict[str, ObjectInfo]:
    """Objects under a prefix (or the one object a URI names), keyed by relative path."""
    return _list(uri, s3)[0]


def list_prefix(uri: str, s3: S3Options | None = None) -> dict[str, ObjectInfo]:
    """Objects under a folder or prefix; UserError when `uri` names a single object."""
    listing, single = _list(uri, s3)
    if single:
        raise UserError(f"{uri} is one object; give the folder or prefix that holds it")
    return listing


def _list(uri: str, s3: S3Options | None) -> tuple[dict[str, ObjectInfo], bool]:
    """The listing, and whether `uri` names one object (rather than a prefix)."""
    if is_s3(uri):
        fs = s3_filesystem(s3)
        path = uri[len("s3://") :].rstrip("/")
        try:
            if fs.isfile(path):
                info = fs.info(path)
                one = ObjectInfo(info["size"], str(info.get("ETag")))
                return {path.rsplit("/", 1)[-1]: one}, True
            found = fs.find(path + "/", detail=True)
        except Exception as exc:
            raise _s3_errors(uri, exc) from exc
        return {
            key[len(path) + 1 :]: ObjectInfo(int(info["size"]), str(info.get("ETag")))
            for key, info in found.items()
            if info.get("type") == "file" and not key.endswith("/")
        }, False
    root = local_path(uri)
    if root.is_file():
        st = root.stat()
        return {root.name: ObjectInfo(st.st_size, f"{st.st_size}-{st.st_mtime_ns}")}, True
    if not root.is_dir():
        raise UserError(f"{uri}: no such file or folder")
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(root).as_posix()] = ObjectInfo(
                st.st_size, f"{st.st_size}-{st.st_mtime_ns}"
            )
    return out, False


def manifest_listing(uri: str, s3: S3Options | None = None) -> tuple[dict[str, ObjectInfo], str]:
    """The objects a SageMaker `ManifestFile` names, keyed by their path under its prefix,
    and that prefix: `[{"prefix": "s3://bucket/p/"}, "key-1", "sub/key-2", ...]`."""
    from sdod.errors import DataError

    try:
        entries = json.loads(read_bytes(uri, s3=s3))
    except FileNotFoundError:
        raise UserError(f"{uri}: no such manifest file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{uri}: a ManifestFile must be a JSON array ({exc})") from None
    if (
        not isinstance(entries, list)
        or not entries
        or not isinstance(entries[0], dict)
        or not isinstance(entries[0].get("prefix"), str)
        or not all(isinstance(e, str) for e in entries[1:])
    ):
        raise DataError(
            f'{uri}: a ManifestFile is [{{"prefix": "s3://bucket/prefix/"}}, "key", ...]'
        )
    prefix = entries[0]["prefix"].rstrip("/")
    listing = {}
    for rel in entries[1:]:
        safe_relative(rel, f"{uri} entry")
        found, _ = _list(f"{prefix}/{rel}", s3)
        if not found:
            raise UserError(f"{uri} lists {rel}, which is not under {prefix}/")
        listing[rel] = next(iter(found.values()))
    return listing, prefix


def _state_file(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.sync.json"


def _fetcher(uri: str, s3: S3Options | None, single: bool) -> Callable[[str, Path], object]:
    """Copies one listed object to a local file; `single`: the URI names that object itself."""
    if is_s3(uri):
        fs = s3_filesystem(s3)
        base = uri[len("s3://") :].rstrip("/")
        return lambda rel, tmp: fs.get_file(base if single else f"{base}/{rel}", str(tmp))
    root = local_path(uri)
    return lambda rel, tmp: shutil.copyfile(root if single else root / rel, tmp)


def _listing(
    uri: str, s3: S3Options | None, manifest: bool
) -> tuple[dict[str, ObjectInfo], str, bool]:
    """The objects to copy (relative name -> info), the URI they are under, and whether
    `uri` names one object itself; with `manifest`, those its ManifestFile names."""
    if manifest:
        (objects, source), single = manifest_listing(uri, s3), False
    else:
        (objects, single), source = _list(uri, s3), uri
    if not objects:
        raise UserError(f"{uri}: matches no objects; check the bucket and prefix")
    for rel in objects:  # keys come from whoever can write the prefix (or the manifest)
        safe_relative(rel, f"object key under {source}:")
    return objects, source, single


def _copy_all(
    todo: list[str], transfer: Callable[[str], int], workers: int, bar: Any = None
) -> int:
    """Run `transfer` over `todo` on a thread pool; the bytes moved."""
    moved = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for size in pool.map(transfer, todo):
            moved += size
            if bar is not None:
                bar.update()
    return moved


def _changed(objects: dict[str, ObjectInfo], dest: Path, state_path: Path) -> list[str]:
    """The objects whose local copy is missing, or differs in size or in the version the
    last sync recorded (`state_path`)."""
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    return [
        rel
        for rel, info in objects.items()
        if not (
            (dest / rel).is_file()
            and (dest / rel).stat().st_size == info.size
            and state.get(rel) == info.version
        )
    ]


def _downloader(
    uri: str,
    source: str,
    dest: Path,
    objects: dict[str, ObjectInfo],
    fetch: Callable[[str, Path], object],
    retries: int,
) -> Callable[[str], int]:
    """Copies one listed object into `dest` (a temporary name, retried, then renamed) and
    returns its size."""

    def transfer(rel: str) -> int:
        target = inside(dest, rel, f"object key under {source}:")
        tmp = temporary_sibling(target)
        try:
            with_retries(f"{uri}/{rel}", lambda: fetch(rel, tmp), retries=retries)
            os.replace(tmp, target)
        except Exception as exc:
            if is_s3(uri):
                raise _s3_errors(f"{uri.rstrip('/')}/{rel}", exc) from exc
            raise
        finally:
            tmp.unlink(missing_ok=True)
        return objects[rel].size

    return transfer


def sync_to_local(
    uri: str,
    dest: str | os.PathLike[str],
    *,
    s3: S3Options | None = None,
    workers: int = 8,
    retries: int = 4,
    progress: bool = True,
    manifest: bool = False,
) -> SyncResult:
    """Mirror the objects under `uri` (or, with `manifest`, those its ManifestFile names)
    into the folder `dest`.

    Objects whose size and ETag (local: size and mtime) match the last sync are skipped,
    so a re-run transfers nothing; local files no longer under `uri` are removed. Each
    file is downloaded to a temporary name and renamed; transient errors are retried.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    dest = Path(dest)
    objects, source, single = _listing(uri, s3, manifest)
    dest.mkdir(parents=True, exist_ok=True)
    state_path = _state_file(dest)
    todo = _changed(objects, dest, state_path)
    transfer = _downloader(uri, source, dest, objects, _fetcher(source, s3, single), retries)
    bar = tqdm(total=len(todo), desc=f"sync {uri}", unit="file", disable=None if progress else True)
    moved = _copy_all(todo, transfer, workers, bar)
    bar.close()
    removed = _prune_local(dest, objects)
    atomic_write_json(state_path, {rel: info.version for rel, info in objects.items()})
    return SyncResult(
        uri, str(dest), len(objects), len(todo), len(objects) - len(todo), removed, moved,
        round(time.perf_counter() - start, 3),
    )  # fmt: skip


def _prune_local(dest: Path, objects: dict[str, ObjectInfo]) -> int:
    """Remove the files under `dest` that are not among `objects`; how many."""
    removed = 0
    for p in sorted(dest.rglob("*"), reverse=True):
        rel = p.relative_to(dest).as_posix()
        if p.is_file() and rel not in objects:
            p.unlink()
            removed += 1
    return removed


def _md5(path: Path) -> str:

    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_tree(
    src: str,
    dst: str,
    *,
    s3: S3Options | None = None,
    workers: int = 8,
    progress: bool = False,
    manifest: bool = False,
) -> SyncResult:
    """Mirror the objects under `src` to `dst`, each of which may be S3, `file://` or a path.

    To a local folder this is `sync_to_local`. To S3: S3 sources are copied server-side,
    local files uploaded; an object already at `dst` with the same size and content (ETag,
    or the local file's MD5) is skipped, and objects under `dst` that `src` lacks are
    removed, so `dst` ends as a snapshot of `src`.
    """
    if not is_s3(dst):
        return sync_to_local(
            src, local_path(dst), s3=s3, workers=workers, progress=progress, manifest=manifest
        )
    start = time.perf_counter()
    objects, src, single = _listing(src, s3, manifest)
    fs = s3_filesystem(s3)
    base = dst[len("s3://") :].rstrip("/")
    present = _s3_files(fs, base, dst)
    source = _Source(src, single)
    todo = [rel for rel in objects if not source.same_as(rel, objects[rel], present.get(rel))]
    moved = _copy_all(todo, _uploader(fs, base, source, objects), workers)
    stale = [f"{base}/{rel}" for rel in present if rel not in objects]
    if stale:
        try:
            fs.rm(stale)
        except Exception as exc:
            raise _s3_errors(dst, exc) from exc
    return SyncResult(
        src, dst, len(objects), len(todo), len(objects) - len(todo), len(stale), moved,
        round(time.perf_counter() - start, 3),
    )  # fmt: skip


def _s3_files(fs: Any, base: str, dst: str) -> dict[str, dict[str, Any]]:
    """The objects under the S3 prefix `base` (of the URI `dst`): relative key -> listing
    entry (size, ETag)."""
    try:
        there = fs.find(base + "/", detail=True)
    except Exception as exc:
        raise _s3_errors(dst, exc) from exc
    return {k[len(base) + 1 :]: v for k, v in there.items() if v.get("type") == "file"}


def _uploader(
    fs: Any, base: str, source: _Source, objects: dict[str, ObjectInfo]
) -> Callable[[str], int]:
    """Copies one listed object to `base/<rel>` in S3 (server-side from S3, uploaded from
    a local file), retried, and returns its size."""

    def transfer(rel: str) -> int:
        target = f"{base}/{rel}"
        try:
            if source.in_s3:
                with_retries(target, lambda: fs.copy(source.of(rel), target))
            else:
                with_retries(target, lambda: fs.put_file(source.of(rel), target))
        except Exception as exc:
            raise _s3_errors(f"s3://{target}", exc) from exc
        return objects[rel].size

    return transfer


class _Source:
    """Where copy_tree reads an object: an S3 key (server-side copy) or a local file."""

    def __init__(self, src: str, single: bool) -> None:
        self.in_s3, self.single = is_s3(src), single
        self.base = src[len("s3://") :].rstrip("/") if self.in_s3 else os.fspath(local_path(src))

    def same_as(self, rel: str, ours: ObjectInfo, theirs: dict | None) -> bool:
        """Whether the object already at the destination (`theirs`, a listing entry) has
        this one's size and content (ETag, or the local file's MD5)."""
        if theirs is None or int(theirs["size"]) != ours.size:
            return False
        digest = ours.version.strip('"') if self.in_s3 else _md5(Path(self.of(rel)))
        return str(theirs.get("ETag", "")).strip('"') == digest

    def of(self, rel: str) -> str:
        if self.single:
            return self.base
        return f"{self.base}/{rel}" if self.in_s3 else os.fspath(Path(self.base) / rel)


def upload_tree(
    local: str | os.PathLike[str], uri: str, *, s3: S3Options | None = None, workers: int = 8
) -> str:
    """Copy a local folder's files to the prefix or folder `uri` (a snapshot: see copy_tree)."""
    copy_tree(os.fspath(local), uri, s3=s3, workers=workers)
    return uri
