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
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from sdod.data.rec_label import encode, format_lst_line, parse_lst_line
from sdod.data.recordio import RecordWriter, frame_parts, record_head
from sdod.data.sample import SampleSet
from sdod.errors import DataError, UserError
from sdod.safe_paths import inside
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
    for lineno, line in enumerate(_lst_lines(lst), start=1):
        if line.strip():
            key, label, rel = parse_lst_line(line, f"{lst}:{lineno}")
            path = inside(root, rel, f"{lst}:{lineno}: image path")  # never outside --root
            items.append(PackItem(key, label, rel, str(path), line.rstrip("\r\n")))
    return items


def _lst_lines(lst: Path) -> list[str]:
    """The `.lst`'s lines; DataError for bytes that are not UTF-8 text."""
    try:
        return lst.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{lst}: a .lst is text, but byte {exc.start} is not UTF-8") from None


def items_from_samples(sampleset: SampleSet, root: str | Path | None = None) -> list[PackItem]:
    """Number the samples 0..N-1; `relpath` is relative to `root` (else the file name)."""
    items = []
    for key, sample in enumerate(sampleset.samples):
        if _addressed(sample.image):  # a record of a .rec, or an S3 source-ref
            items.append(PackItem(key, encode(sample), f"{sample.key}.jpg", sample.image))
            continue
        path = Path(sample.image)
        rel = path.relative_to(root).as_posix() if root else path.name
        items.append(PackItem(key, encode(sample), rel, str(path)))
    return items


def _addressed(image: str) -> bool:
    """An image that is not a plain file: `path.rec#offset` or `s3://…`."""
    return ".rec#" in image or image.startswith("s3://")


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


def check_complete(data: bytes, where: str) -> None:
    """A cheap, decode-free truncation check: a JPEG ends with its EOI marker, a PNG with
    IEND (a few trailing bytes are tolerated). Pass-through packing never decodes, so this
    is what keeps a cut-off upload out of the .rec."""
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]:
        raise DataError(
            f"{where}: the JPEG is truncated (no end-of-image marker); re-upload the file"
        )
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        raise DataError(f"{where}: the PNG is truncated (no IEND chunk); re-upload the file")


def encode_item(item: PackItem, options: PackOptions) -> list[bytes]:
    """One framed record (as parts), ready to append to the .rec."""
    try:
        if _addressed(item.path):
            from sdod.data.images import read_image_bytes

            data = read_image_bytes(item.path)
        else:
            with open(item.path, "rb", buffering=0) as f:
                data = f.readall()
    except OSError as exc:
        raise DataError(f"{item.path}: cannot read the image ({exc.strerror})") from None
    if not data:
        raise DataError(f"{item.path}: the image file is empty (0 bytes)")
    if options.resize:
        data = _resized_jpeg(data, options.resize, options.quality, item.path)
    else:
        check_complete(data, item.path)
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


def shard_prefixes(prefix: str | Path, shards: int) -> list[Path]:
    prefix = Path(prefix)
    return [prefix.with_name(f"{prefix.name}-{i:05d}-of-{shards:05d}") for i in range(shards)]


def pack_sharded(
    items: Sequence[PackItem],
    prefix: str | Path,
    *,
    shards: int,
    options: PackOptions | None = None,
    workers: int = 1,
) -> list[PackResult]:
    """`shards` files `PREFIX-0000i-of-0000n.rec/.idx/.lst`, each a contiguous slice of the
    list. Records are self-delimiting and 4-byte aligned, so `cat` of the shards in order is
    byte-identical to the unsharded .rec (its .idx: the shards' offsets shifted by the sizes
    of the shards before)."""
    if shards < 1:
        raise UserError(f"--shards must be at least 1, got {shards}")
    size = -(-len(items) // shards)
    return [
        pack(items[i * size : (i + 1) * size], p, options=options, workers=workers, progress=False)
        for i, p in enumerate(shard_prefixes(prefix, shards))
        if items[i * size : (i + 1) * size]
    ]


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


def pack_inputs(
    *,
    out: str,
    images: str | None = None,
    annotations: str | None = None,
    manifest: str | None = None,
    lst: str | None = None,
    root: str | None = None,
    resize: int = 0,
    quality: int = 95,
    workers: int = 1,
    shards: int = 1,
) -> PackResult:
    """Pack a dataset into MXNet RecordIO `out.rec/.idx/.lst` (im2rec's detection layout)."""
    from sdod.data import pack as packing
    from sdod.data.channels import samples_from_paths

    if lst:
        if images or annotations or manifest:
            raise UserError("give --lst with --root only")
        if not root:
            raise UserError("--lst needs --root, the folder the .lst paths are relative to")
        items = packing.items_from_lst(lst, root)
    else:
        sampleset, base = samples_from_paths(
            images=images, annotations=annotations, manifest=manifest
        )
        items = packing.items_from_samples(sampleset, base)
    options = packing.PackOptions(resize=resize, quality=quality)
    if shards > 1:
        parts = packing.pack_sharded(items, out, shards=shards, options=options, workers=workers)
        return packing.PackResult(
            rec=",".join(p.rec for p in parts),
            idx=",".join(p.idx for p in parts),
            lst=",".join(p.lst for p in parts),
            records=sum(p.records for p in parts),
            bytes=sum(p.bytes for p in parts),
            seconds=sum(p.seconds for p in parts),
        )
    return packing.pack(items, out, options=options, workers=workers)
