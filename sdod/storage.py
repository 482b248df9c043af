"""Reading and writing files and URIs: `s3://bucket/key`, `file:///path`, plain paths.

S3 goes through s3fs. Endpoint, region and credentials come from the standard AWS
environment and config files (`AWS_ENDPOINT_URL` for MinIO and other S3-compatible
stores), or from an `S3Options` the caller builds (the DAG layer builds one from an
Airflow AWS connection).

Local writes are atomic: data goes to a temporary name in the target folder and is renamed
into place, so a reader never sees half a file and an interrupted run leaves no partial
output under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sdod.errors import UserError
from sdod.settings import SiteSettings

T = TypeVar("T")


@dataclass(frozen=True)
class S3Options:
    """Explicit S3 settings; unset fields fall back to the AWS environment."""

    endpoint_url: str | None = None
    region_name: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    def storage_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.access_key_id:
            opts.update(key=self.access_key_id, secret=self.secret_access_key)
        if self.session_token:
            opts["token"] = self.session_token
        client: dict[str, Any] = {}
        if self.endpoint_url:
            client["endpoint_url"] = self.endpoint_url
        if self.region_name:
            client["region_name"] = self.region_name
        if client:
            opts["client_kwargs"] = client
        return opts

    def env(self) -> dict[str, str]:
        """The same settings as AWS environment variables, for a child process (botocore
        reads `AWS_ENDPOINT_URL`); only the fields that are set."""
        pairs = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region_name,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_SESSION_TOKEN": self.session_token,
        }
        return {k: v for k, v in pairs.items() if v}


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def join_uri(base: str | os.PathLike[str], *parts: str) -> str:
    """`base/part/...` for an `s3://` or `file://` URI or a path (no doubled slashes)."""
    out = os.fspath(base).rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def temporary_sibling(target: Path) -> Path:
    """A fresh, unique temporary name beside `target` (created empty, O_EXCL): two writers
    of one file never share a temporary name; rename it over `target` when done."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would follow the file into place
    os.close(fd)
    return Path(tmp)


def cache_root() -> Path:
    """This machine's cache for task inputs (`SDOD_CACHE_DIR`, else a folder in the system's
    temporary directory). Only caches live here: deleting it between tasks loses nothing."""
    root = SiteSettings.from_env().cache_dir
    root.mkdir(parents=True, exist_ok=True)
    return root


def local_path(uri: str | os.PathLike[str]) -> Path:
    """A `file://` URI or plain path as a Path; UserError for other schemes."""
    text = os.fspath(uri)
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    if "://" in text:
        raise UserError(f"{text}: unsupported URI scheme; use s3://, file:// or a local path")
    return Path(text)


def s3_filesystem(s3: S3Options | None = None) -> Any:
    """An s3fs filesystem (imported lazily: it pulls in aiobotocore)."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, **(s3 or S3Options()).storage_options())


_PROCESS_FS: dict[int, Any] = {}


def process_s3_filesystem() -> Any:
    """One s3fs filesystem per process, from the AWS environment: for readers that run in
    data-loader workers (an s3fs client does not survive a fork, so each pid makes its own)."""
    pid = os.getpid()
    if pid not in _PROCESS_FS:
        _PROCESS_FS.clear()
        _PROCESS_FS[pid] = s3_filesystem()
    return _PROCESS_FS[pid]


def _s3_errors(uri: str, exc: Exception) -> UserError:
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    name = type(exc).__name__
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return UserError(
            f"{uri}: no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "or AWS_PROFILE (or give the DAG an AWS connection)"
        )
    if isinstance(exc, PermissionError):
        return UserError(f"{uri}: access denied ({exc}); check the credentials' permissions")
    if isinstance(exc, FileNotFoundError):
        return UserError(f"{uri}: no such bucket or key")
    return UserError(f"{uri}: S3 request failed ({name}: {exc})")


# --- atomic local writes -------------------------------------------------------------


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a JSON file; UserError if it is missing, DataError (naming it) if it is not JSON."""
    from sdod.errors import DataError

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write `obj` as JSON (UTF-8, trailing newline) atomically."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def with_retries(what: str, fn: Callable[[], T], *, retries: int = 4, base_delay: float = 0.5) -> T:
    """Call `fn`, retrying transient OSErrors with exponential back-off (0.5 s, 1 s, 2 s …)."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except (FileNotFoundError, PermissionError):
            raise  # not transient
        except OSError:
            if attempt == retries:
                raise
            time.sleep(base_delay * 2**attempt)
    raise AssertionError("unreachable")


# --- single objects --------------------------------------------------------------------


def upload_file(local: str | os.PathLike[str], uri: str, *, s3: S3Options | None = None) -> str:
    """Copy one local file to `uri`: an S3 PUT (atomic per object) or a local rename."""
    if is_s3(uri):
        fs = s3_filesystem(s3)
        try:
            with_retries(uri, lambda: fs.put_file(os.fspath(local), uri[len("s3://") :]))
        except Exception as exc:
            raise _s3_errors(uri, exc) from exc
        return uri
    target = local_path(uri)
    tmp = temporary_sibling(target)
    try:
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return str(target)


def read_bytes(uri: str, *, s3: S3Options | None = None, fs: Any = None) -> bytes:
    """The whole object (S3, with retries) or local file `uri`; pass `fs` (from
    `s3_filesystem`) to reuse one S3 client over many calls."""
    if is_s3(uri):
        fs = fs or s3_filesystem(s3)
        try:
            data: bytes = with_retries(uri, lambda: fs.cat_file(uri[len("s3://") :]))
        except Exception as exc:
            raise _s3_errors(uri, exc) from exc
        return data
    return local_path(uri).read_bytes()


def write_bytes(uri: str, data: bytes, *, s3: S3Options | None = None, fs: Any = None) -> str:
    """Write `data` to `uri`: one S3 PUT (atomic per object) or an atomic local file."""
    if is_s3(uri):
        fs = fs or s3_filesystem(s3)
        try:
            with_retries(uri, lambda: fs.pipe_file(uri[len("s3://") :], data))
        except Exception as exc:
            raise _s3_errors(uri, exc) from exc
        return uri
    return str(atomic_write_bytes(local_path(uri), data))


def create_only(uri: str, data: bytes, *, s3: S3Options | None = None) -> bool:
    """Write `data` to `uri` only if nothing is there yet; whether this call created it.

    The one way two writers agree on who "wins" a name: S3's conditional PutObject
    (`If-None-Match: *`, honoured by AWS S3, MinIO and moto; a store that ignores it cannot
    arbitrate), or `O_CREAT | O_EXCL` for a local file (then the data is written through
    and renamed over the placeholder, so a reader sees it whole)."""
    if is_s3(uri):
        return _s3_create_only(uri, data, s3)
    target = local_path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
    except FileExistsError:
        return False
    atomic_write_bytes(target, data)
    return True


def _s3_create_only(uri: str, data: bytes, s3: S3Options | None) -> bool:
    from botocore.exceptions import ClientError

    bucket, _, key = uri[len("s3://") :].partition("/")
    client = s3_client(s3)
    try:
        with_retries(
            uri, lambda: client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
            return False  # there already, or another writer's conditional PUT is under way
        raise _s3_errors(uri, exc) from exc
    except Exception as exc:
        raise _s3_errors(uri, exc) from exc
    return True


def s3_client(s3: S3Options | None = None) -> Any:
    """A boto3 S3 client with the same settings as `s3_filesystem` (for the calls s3fs does
    not expose, such as conditional writes)."""
    import boto3  # type: ignore[import-untyped]

    opts = s3 or S3Options()
    session = boto3.session.Session(
        aws_access_key_id=opts.access_key_id,
        aws_secret_access_key=opts.secret_access_key,
        aws_session_token=opts.session_token,
        region_name=opts.region_name,
    )
    return session.client("s3", endpoint_url=opts.endpoint_url)


@contextmanager
def open_stream(
    uri: str, *, s3: S3Options | None = None, block_size: int = 8 << 20
) -> Iterator[Any]:
    """A readable binary file object over `uri`, streamed (S3: ranged GETs, no full download)."""
    if is_s3(uri):
        fs = s3_filesystem(s3)
        try:
            f = fs.open(uri[len("s3://") :], "rb", block_size=block_size, cache_type="readahead")
        except Exception as exc:
            raise _s3_errors(uri, exc) from exc
    else:
        f = local_path(uri).open("rb")
    with f:
        yield f


def exists(uri: str, *, s3: S3Options | None = None) -> bool:
    """Whether the object or file `uri` exists."""
    if is_s3(uri):
        fs = s3_filesystem(s3)
        try:
            return bool(fs.isfile(uri[len("s3://") :]))
        except Exception as exc:
            raise _s3_errors(uri, exc) from exc
    return local_path(uri).is_file()


def remove_tree(uri: str, *, s3: S3Options | None = None) -> int:
    """Delete every object under the prefix (or files under the folder); how many."""
    if is_s3(uri):
        fs = s3_filesystem(s3)
        path = uri[len("s3://") :].rstrip("/")
        try:
            keys = list(fs.find(path + "/"))
            if keys:
                fs.rm(keys)
        except Exception as exc:
            raise _s3_errors(uri, exc) from exc
        return len(keys)
    root = local_path(uri)
    count = sum(1 for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0
    shutil.rmtree(root, ignore_errors=True)
    return count


def remove(uri: str, *, s3: S3Options | None = None) -> None:
    """Delete one object or file, if it exists."""
    if is_s3(uri):
        fs = s3_filesystem(s3)
        try:
            if fs.isfile(uri[len("s3://") :]):
                fs.rm_file(uri[len("s3://") :])
        except Exception as exc:
            raise _s3_errors(uri, exc) from exc
        return
    local_path(uri).unlink(missing_ok=True)


def fetch_file(uri: str, dest: str | os.PathLike[str], *, s3: S3Options | None = None) -> Path:
    """Download one object (or copy one file) to `dest`, atomically (temporary name, rename)."""
    target = Path(dest)
    tmp = temporary_sibling(target)
    try:
        if is_s3(uri):
            fs = s3_filesystem(s3)
            try:
                with_retries(uri, lambda: fs.get_file(uri[len("s3://") :], str(tmp)))
            except Exception as exc:
                raise _s3_errors(uri, exc) from exc
        else:
            source = local_path(uri)
            if not source.is_file():
                raise UserError(f"{uri}: no such file")
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
