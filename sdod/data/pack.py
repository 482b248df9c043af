"""`sdod pack`: Samples or an im2rec `.lst` into `PREFIX.rec`, `PREFIX.idx`, `PREFIX.lst`.

Pass-through (the default) stores each file's bytes untouched, exactly like
`im2rec --pass-through --pack-label`, so the output is byte-identical to MXNet's. With
`resize` the image is decoded, its shorter edge scaled to `resize` (the other edge
`old * resize // short`, im2rec's rule) and re-encoded as JPEG at `quality`.
Workers encode in parallel; records are written in list order, so the bytes do not
depend on the worker count.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from sdod.data.detlabel import encode, format_lst_line, parse_lst_line
from sdod.data.recordio import RecordWriter, frame_parts, record_head
from sdod.data.sampleset import SampleSet
from sdod.errors import DataError, UserError
from sdod.storage import atomic_write_bytes


@dataclass(frozen=True)
class PackItem:
    key: int
    label: npt.NDArray[np.float32]
    relpath: str
    path: str
    lst_line: str = ""  # the line as read from a .lst, written back unchanged

    def format_lst(self) -> str:
        return self.lst_line or format_lst_line(self.key, self.label, self.relpath)


@dataclass(frozen=True)
class PackOptions:
    resize: int = 0
    quality: int = 95


@dataclass(frozen=True)
class PackResult:
    rec: str
    idx: str
    lst: str
    records: int
    bytes: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def items_from_lst(lst: str | Path, root: str | Path) -> list[PackItem]:
    """Read an im2rec `.lst`; image paths are relative to `root`."""
    lst, root = Path(lst), Path(root)
    if not lst.is_file():
        raise UserError(f".lst file {lst} does not exist")
    items = []
    for lineno, line in enumerate(lst.read_text().splitlines(), start=1):
        if line.strip():
            key, label, rel = parse_lst_line(line, f"{lst}:{lineno}")
            items.append(PackItem(key, label, rel, os.path.join(root, rel), line.rstrip("\r\n")))
    return items


def items_from_samples(sampleset: SampleSet, root: str | Path | None = None) -> list[PackItem]:
    """Number the samples 0..N-1; `relpath` is relative to `root` (else the file name)."""
    items = []
    for key, sample in enumerate(sampleset.samples):
        path = Path(sample.image)
        rel = path.relative_to(root).as_posix() if root else path.name
        items.append(PackItem(key, encode(sample), rel, str(path)))
    return items


def _resized_jpeg(data: bytes, size: int, quality: int, where: str) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            new = (size, h * size // w) if h > w else (w * size // h, size)
            # JPEG: let the decoder downscale in the DCT domain (by 1/2..1/8) to no less
            # than the target size; the resize below then does the exact rest.
            im.draft("RGB", new)
            image = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{where}: cannot decode the image ({exc})") from None
    out = io.BytesIO()
    image.resize(new, Image.Resampling.BOX).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def encode_item(item: PackItem, options: PackOptions) -> list[bytes]:
    """One framed record (as parts), ready to append to the .rec."""
    try:
        with open(item.path, "rb", buffering=0) as f:
            data = f.readall()
    except OSError as exc:
        raise DataError(f"{item.path}: cannot read the image ({exc.strerror})") from None
    if not data:
        raise DataError(f"{item.path}: the image file is empty (0 bytes)")
    if options.resize:
        data = _resized_jpeg(data, options.resize, options.quality, item.path)
    return frame_parts(record_head(item.label, id=item.key), data)


def _encode_chunk(args: tuple[Sequence[PackItem], PackOptions]) -> list[list[bytes]]:
    items, options = args
    return [encode_item(item, options) for item in items]


def _encoded(
    items: Sequence[PackItem], options: PackOptions, workers: int
) -> Iterator[list[bytes]]:
    if workers <= 1:
        for item in items:
            yield encode_item(item, options)
        return
    chunk = 32
    jobs = ((items[i : i + chunk], options) for i in range(0, len(items), chunk))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for framed_chunk in pool.map(_encode_chunk, jobs):
            yield from framed_chunk


def pack(
    items: Iterable[PackItem],
    prefix: str | Path,
    *,
    options: PackOptions | None = None,
    workers: int = 1,
    progress: bool = True,
) -> PackResult:
    """Write `prefix.rec/.idx/.lst`; on any error nothing is left under those names."""
    items = list(items)
    options = options or PackOptions()
    if not items:
        raise UserError("nothing to pack: the input lists no images")
    if options.resize and options.resize < 1:
        raise UserError(f"--resize must be a positive number of pixels, got {options.resize}")
    if not 1 <= options.quality <= 100:
        raise UserError(f"--quality must be in 1..100, got {options.quality}")
    prefix = Path(prefix)
    rec, idx, lst = (prefix.with_name(prefix.name + s) for s in (".rec", ".idx", ".lst"))
    start = time.perf_counter()
    bar = tqdm(total=len(items), desc="pack", unit="img", disable=None if progress else True)
    with RecordWriter(rec, idx) as writer:
        for item, framed in zip(items, _encoded(items, options, workers), strict=True):
            writer.write_framed(item.key, framed)
            bar.update()
    bar.close()
    lines = [item.format_lst() for item in items]
    atomic_write_bytes(lst, ("\n".join(lines) + "\n").encode())
    seconds = time.perf_counter() - start
    return PackResult(str(rec), str(idx), str(lst), len(items), writer.offset, seconds)
