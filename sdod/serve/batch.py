"""Batch inference (SageMaker Batch Transform's shape): every JPEG/PNG under a folder or S3
prefix goes through the predictor, and one JSON response is written per image, at the same
relative path under the output with `.out` appended (`a/b.jpg` -> `a/b.jpg.out`), as Batch
Transform names its outputs.

A bad image does not stop the run: it is counted, named in the summary and in
`_failures.json` next to the outputs (policy `skip`, the default); policy `fail` stops at
the first one. A small thread pool reads and decodes images ahead of the model, which
takes them `batch_size` at a time in one forward pass (as `sdod serve` batches).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, TypeVar

import torch

from sdod.errors import DataError, UserError
from sdod.safe_paths import inside, safe_relative
from sdod.serve.predictor import Predictor, check_options
from sdod.serve.slicing import Slicing
from sdod.storage import S3Options, is_s3, local_path, read_bytes, s3_filesystem, write_bytes
from sdod.transfer import list_prefix

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ON_ERROR = ("skip", "fail")
CHUNK = 32  # images fetched ahead of the model at most
T = TypeVar("T")


@dataclass
class BatchResult:
    source: str
    dest: str
    images: int
    written: int
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _join(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + rel


def _output(dest: str, rel: str) -> str:
    """Where the response for the input `rel` goes: under `dest`, never outside it."""
    if is_s3(dest):
        return _join(dest, safe_relative(rel, "input key"))
    return str(inside(local_path(dest), rel, "input key"))


def _safe_names(names: list[str], source: str, result: BatchResult, on_error: str) -> list[str]:
    """The input keys that are safe to read and to name an output after; the others (`..`,
    absolute, control characters) are counted as failed, or stop the run (`fail`)."""
    safe = []
    for rel in names:
        try:
            safe.append(safe_relative(rel, "input key"))
        except DataError as exc:
            if on_error == "fail":
                raise
            result.failed.append({"file": _join(source, rel), "error": str(exc)})
    return safe


def _chunks(items: list[T], n: int) -> Iterator[list[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _failed(result: BatchResult, source: str, rel: str, exc: Exception, on_error: str) -> None:
    """Count a bad image (named in the summary); with `fail`, stop the run here."""
    message = getattr(exc, "reason", None) or str(exc)  # the file is named beside it
    result.failed.append({"file": _join(source, rel), "error": message})
    if on_error == "fail":
        raise DataError(
            f"{_join(source, rel)}: {message} (--on-error fail stops here; "
            f"{result.written} outputs written)"
        ) from None


def _answers(
    predictor: Predictor,
    ready: list[tuple[str, Any]],
    batch_size: int,
    options: tuple[float, int | None],
    slicing: Slicing | None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each prepared image's response: `batch_size` images per forward pass, or, sliced,
    each image's tiles `batch_size` at a time, then merged."""
    if slicing is None:
        for batch in _chunks(ready, batch_size):
            images = torch.cat([image for _, image in batch])
            answers = predictor.forward_many(images, [options] * len(batch))
            yield from zip([rel for rel, _ in batch], answers, strict=True)
        return
    for rel, (found, tiles, size) in ready:
        parts = predictor.forward_tiles(tiles, batch_size)
        threshold, top_k = options
        merged = predictor.merge_tiles(
            parts, found, size, slicing, score_threshold=threshold, top_k=top_k
        )
        yield rel, merged


def _check_arguments(
    on_error: str, batch_size: int, score_threshold: float, top_k: int | None
) -> None:
    """UserError naming the option that is out of range."""
    if on_error not in ON_ERROR:
        raise UserError(f"--on-error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be a positive integer, got {batch_size}")
    check_options(score_threshold, top_k)


def _image_names(source: str, s3: S3Options | None) -> list[str]:
    """The JPEG and PNG files under `source`, relative to it, sorted; UserError if none."""
    names = sorted(k for k in list_prefix(source, s3) if k.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise UserError(f"{source}: no .jpg/.jpeg/.png images found")
    return names


def _prepare(predictor: Predictor, source: str, slicing: Slicing | None, fs: Any, rel: str) -> Any:
    """The image `rel` under `source` read and prepared for the model (in the pool), or
    the error that says why not (returned, not raised)."""
    try:
        data = read_bytes(_join(source, rel), fs=fs)
        if slicing is not None:
            return predictor.prepare_tiles(data, slicing, rel)
        return predictor.prepare(data, rel)
    except (OSError, UserError) as exc:
        return DataError(f"cannot read ({exc})") if isinstance(exc, OSError) else exc


def batch_predict(
    predictor: Predictor,
    source: str,
    dest: str,
    *,
    score_threshold: float = 0.0,
    top_k: int | None = None,
    on_error: str = "skip",
    suffix: str = ".out",
    workers: int = 8,
    batch_size: int = 8,
    slicing: Slicing | None = None,
    s3: S3Options | None = None,
    log: Callable[[str], None] = print,
) -> BatchResult:
    """Predict every image under `source` (folder or s3:// prefix) into `dest` (large
    images tile by tile with `slicing`)."""
    _check_arguments(on_error, batch_size, score_threshold, top_k)
    started = time.monotonic()
    names = _image_names(source, s3)
    result = BatchResult(source, dest, len(names), 0)
    names = _safe_names(names, source, result, on_error)
    fs_in = s3_filesystem(s3) if is_s3(source) else None
    fs_out = s3_filesystem(s3) if is_s3(dest) else None
    fetch = partial(_prepare, predictor, source, slicing, fs_in)
    log(f"batch inference: {result.images} images from {source} to {dest}")
    with ThreadPoolExecutor(max(1, workers)) as pool:
        ahead = max(CHUNK, batch_size) if slicing is None else max(1, workers)  # tiles weigh
        for chunk in _chunks(names, ahead):
            ready = []
            for rel, image in zip(chunk, pool.map(fetch, chunk), strict=True):
                if isinstance(image, Exception):
                    _failed(result, source, rel, image, on_error)
                else:
                    ready.append((rel, image))
            answers = _answers(predictor, ready, batch_size, (score_threshold, top_k), slicing)
            for rel, answer in answers:
                write_bytes(_output(dest, rel + suffix), json.dumps(answer).encode(), fs=fs_out)
                result.written += 1
            done = result.written + len(result.failed)
            log(f"batch inference: {done}/{result.images} images ({len(result.failed)} failed)")
    if result.failed:
        body = json.dumps(result.failed, indent=2).encode()
        write_bytes(_join(dest, "_failures.json"), body, fs=fs_out)
    result.seconds = round(time.monotonic() - started, 3)
    return result
