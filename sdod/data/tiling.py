"""`sdod tile`: large images and their boxes cut into tiles for training.

Each image is cut into the windows of `sdod.data.tiles.windows` (a tile size, an overlap).
A box goes into a tile clipped to it when at least `min_visible` of its area (the part
inside the image) lies in the tile; a box less visible there is dropped from that tile
and counted (`boxes_dropped_partial`). An object kept in no tile at all is counted
(`objects_lost`) and listed in the index with how much of it the best tile showed: none is
lost silently. Tiles without a kept box are kept at `empty_rate` (exactly that share of
them, rounded, chosen by `seed`).

A tile is named `<stem>__x<x0>_y<y0>_w<w>_h<h>.<jpg|png>` after its source image and its
window; `<out>/<channel>_tiles.json` lists every tile's source image and window and the
lost objects. JPEG sources give JPEG tiles (quality 95), PNG sources PNG tiles; images are
bounded in pixels from their header before a pixel is decoded. The tiles are written in
any format `sdod convert` writes, through its writers.
"""

from __future__ import annotations

import io
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from sdod.data import tiles as grid
from sdod.data.convert import TARGETS, convert
from sdod.data.images import read_image_bytes
from sdod.data.problems import Problems
from sdod.data.sample import Sample, SampleSet
from sdod.data.tiles import Window
from sdod.errors import DataError, UserError
from sdod.storage import atomic_write_json, is_s3

# the pixels an image may declare, as `sdod.serve.images.DEFAULT_MAX_PIXELS` (a test holds
# the two equal; data/ may not import serve/)
DEFAULT_MAX_PIXELS = 40_000_000
JPEG_QUALITY = 95
EPS = 1e-9  # a box exactly at the visible-area threshold is kept
PROGRESS_EVERY_S = 2.0


@dataclass(frozen=True)
class TileOptions:
    """How images are cut: tile `size` and `overlap` in pixels, the share of a box's area a
    tile must show to keep it, the share of empty tiles kept and the seed choosing them."""

    size: int
    overlap: int = 64
    min_visible: float = 0.6
    empty_rate: float = 0.1
    seed: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        grid.check_tiling(self.size, self.overlap)
        if not 0 < self.min_visible <= 1:
            raise UserError(f"--min-visible must be in (0, 1], got {self.min_visible}")
        if not 0 <= self.empty_rate <= 1:
            raise UserError(f"--empty-rate must be in [0, 1], got {self.empty_rate}")
        if self.max_pixels < 1:
            raise UserError(f"--max-pixels must be positive, got {self.max_pixels}")


@dataclass(eq=False)
class Tile:
    """One window of one source image and the boxes it keeps, in tile pixels."""

    source: Sample
    window: Window
    boxes: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    difficult: npt.NDArray[np.bool_]
    source_boxes: list[int]  # indices of the kept boxes in the source's boxes
    clipped: int  # kept boxes the tile cuts

    @property
    def name(self) -> str:
        w = self.window
        return f"{Path(self.source.key).name}__x{w.x0}_y{w.y0}_w{w.width}_h{w.height}"


@dataclass
class TileResult:
    """What `tile` wrote and what the visible-area rule did to the boxes."""

    to: str
    out: str
    index: str
    images: int = 0
    windows: int = 0
    tiles: int = 0
    empty_windows: int = 0
    empty_kept: int = 0
    objects: int = 0
    boxes: int = 0
    boxes_clipped: int = 0
    boxes_dropped_partial: int = 0
    objects_only_clipped: int = 0
    objects_lost: int = 0
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    lost: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cut_sample(sample: Sample, options: TileOptions) -> tuple[list[Tile], npt.NDArray[np.float64]]:
    """The tiles of one image with the boxes each keeps, and their `[T, N]` visibility."""
    cut = grid.windows(sample.width, sample.height, options.size, options.overlap)
    seen = grid.visibility(sample.boxes, sample.width, sample.height, cut)
    tiles = []
    for t, w in enumerate(cut):
        keep = np.flatnonzero(seen[t] >= options.min_visible - EPS)
        tiles.append(
            Tile(
                source=sample,
                window=w,
                boxes=grid.in_window(sample.boxes[keep], w),
                labels=sample.labels[keep],
                difficult=sample.difficult[keep],
                source_boxes=keep.tolist(),
                clipped=int((seen[t, keep] < 1 - EPS).sum()),
            )
        )
    return tiles, seen


def check_boxes(sampleset: SampleSet) -> None:
    """Every box finite and with area inside its image, and no two images of one name;
    else one error naming them, before anything is written."""
    problems = Problems("boxes to tile")
    for s in sampleset.samples:
        finite = np.asarray(np.isfinite(s.boxes).all(axis=1))
        area = grid.box_area(grid.clip_to_image(s.boxes, s.width, s.height))
        for i in np.flatnonzero(~finite | (area <= 0)).tolist():
            rule = "box_positive_size" if finite[i] else "box_coordinates_finite"
            what = f"box {i} {s.boxes[i].tolist()} has no area in the {s.width} x {s.height} image"
            problems.add(s.image, f"{what} (rule {rule}); fix or remove it", rule)
    problems.raise_if_any()
    names: dict[str, str] = {}
    for s in sampleset.samples:
        stem = Path(s.key).name
        if stem in names:
            raise UserError(
                f"{names[stem]} and {s.image} are both named {stem!r}: their tiles would "
                "share names; rename one of them"
            )
        names[stem] = s.image


def choose_empty(tiles: list[Tile], rate: float, seed: int) -> list[Tile]:
    """The tiles to write: every tile with a box, and `rate` of the empty ones (rounded;
    the same ones for the same input and seed), in their original order."""
    empty = [i for i, t in enumerate(tiles) if not t.source_boxes]
    count = math.floor(rate * len(empty) + 0.5)
    chosen = np.random.default_rng(seed).choice(len(empty), size=count, replace=False)
    dropped = set(empty) - {empty[i] for i in chosen.tolist()}
    return [t for i, t in enumerate(tiles) if i not in dropped]


def _count_objects(
    sample: Sample, seen: npt.NDArray[np.float64], options: TileOptions, result: TileResult
) -> None:
    kept = seen >= options.min_visible - EPS
    result.boxes_dropped_partial += int(((seen > 0) & ~kept).sum())
    whole = (seen >= 1 - EPS).any(axis=0)
    result.objects_only_clipped += int((kept.any(axis=0) & ~whole).sum())
    for n in np.flatnonzero(~kept.any(axis=0)).tolist():
        result.lost.append(
            {
                "source": sample.image,
                "box_index": n,
                "box": sample.boxes[n].tolist(),
                "label": int(sample.labels[n]),
                "best_visible": round(float(seen[:, n].max()), 4),
            }
        )


def plan(sampleset: SampleSet, options: TileOptions, result: TileResult) -> list[Tile]:
    """Every image's tiles (geometry only: no pixel is read), the empty ones chosen, and
    the counts in `result`."""
    check_boxes(sampleset)
    every: list[Tile] = []
    for s in sampleset.samples:
        tiles, seen = cut_sample(s, options)
        every += tiles
        _count_objects(s, seen, options, result)
    chosen = choose_empty(every, options.empty_rate, options.seed)
    result.images, result.objects = len(sampleset), sampleset.num_boxes
    result.windows, result.tiles = len(every), len(chosen)
    result.empty_windows = sum(1 for t in every if not t.source_boxes)
    result.empty_kept = sum(1 for t in chosen if not t.source_boxes)
    result.boxes = sum(len(t.source_boxes) for t in chosen)
    result.boxes_clipped = sum(t.clipped for t in chosen)
    result.objects_lost = len(result.lost)
    return chosen


def _refuse(where: str, rule: str, reason: str) -> DataError:
    return DataError(f"{where}: {reason} (rule {rule})", rule=rule, where=where, reason=reason)


def open_image(sample: Sample, max_pixels: int, *, header_only: bool = False) -> Image.Image:
    """The source image: JPEG or PNG only, its declared pixels bounded before a pixel is
    decoded, its size the annotation's; decoded, or only its header read (a local file)."""
    where = sample.image
    try:
        im = Image.open(
            where if header_only else io.BytesIO(read_image_bytes(where)), formats=["JPEG", "PNG"]
        )
    except UnidentifiedImageError:
        reason = "not a JPEG or PNG image; convert it to one of them"
        raise _refuse(where, "image_format", reason) from None
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling, above ours
        raise _refuse(where, "image_pixels", str(exc)) from None
    except OSError as exc:
        raise _refuse(where, "image_decodes", f"cannot read the image ({exc})") from None
    try:
        _check_size(im, sample, max_pixels)
        if not header_only:
            im.load()
    except (OSError, ValueError) as exc:
        im.close()
        raise _refuse(where, "image_decodes", f"the image does not decode ({exc})") from None
    except BaseException:
        im.close()
        raise
    return im


def _check_size(im: Image.Image, sample: Sample, max_pixels: int) -> None:
    width, height = im.size
    if width * height > max_pixels:
        reason = (
            f"the image declares {width} x {height} pixels, over the limit of {max_pixels}; "
            "raise --max-pixels if you trust it"
        )
        raise _refuse(sample.image, "image_pixels", reason)
    if (width, height) != (sample.width, sample.height):
        reason = (
            f"the image is {width} x {height} pixels but its annotation says "
            f"{sample.width} x {sample.height}; fix the annotation's image size"
        )
        raise _refuse(sample.image, "image_size_matches", reason)


def check_images(tiles: list[Tile], max_pixels: int) -> None:
    """The header of every local source image a tile comes from (a record or an S3 object
    is checked as it is decoded): one error naming them all, before a tile is written."""
    errors: list[DataError] = []
    for source in {id(t.source): t.source for t in tiles}.values():
        if ".rec#" not in source.image and not is_s3(source.image):
            try:
                open_image(source, max_pixels, header_only=True).close()
            except DataError as exc:
                errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    problems = Problems("images to tile")
    for error in errors:
        problems.add_error(error, error.where or "", error.rule or "image_decodes")
    problems.raise_if_any()


def write_tiles(
    sampleset: SampleSet,
    tiles: list[Tile],
    staging: Path,
    options: TileOptions,
    log: Callable[[str], None],
) -> list[Sample]:
    """Each source with a tile to write decoded once and its tiles written into `staging`;
    the tiles as Samples, in order."""
    by_source: dict[int, list[Tile]] = {}
    for t in tiles:
        by_source.setdefault(id(t.source), []).append(t)
    out: list[Sample] = []
    last = time.monotonic()
    for done, source in enumerate(sampleset.samples, start=1):
        if id(source) in by_source:
            out += _write_source(by_source[id(source)], staging, options.max_pixels)
        if time.monotonic() - last >= PROGRESS_EVERY_S or done == len(sampleset):
            log(f"tile: {done}/{len(sampleset)} images, {len(out)} tiles written")
            last = time.monotonic()
    return out


def _write_source(tiles: list[Tile], staging: Path, max_pixels: int) -> list[Sample]:
    out = []
    with open_image(tiles[0].source, max_pixels) as im:
        fmt, suffix, extra = (
            ("PNG", "png", {}) if im.format == "PNG" else ("JPEG", "jpg", {"quality": JPEG_QUALITY})
        )
        for t in tiles:
            w, path = t.window, staging / f"{t.name}.{suffix}"
            im.crop((w.x0, w.y0, w.x1, w.y1)).save(path, fmt, **extra)
            out.append(Sample(t.name, str(path), w.width, w.height, t.boxes, t.labels, t.difficult))
    return out


def _outputs(out: Path, to: str, channel: str) -> list[Path]:
    """What a tiling into `out` as `to` writes, the index included."""
    named = {
        "image-json": [out / channel, out / f"{channel}_annotation"],
        "manifest": [out / channel, out / f"{channel}.manifest"],
        "recordio": [out / f"{channel}.{ext}" for ext in ("rec", "idx", "lst")],
    }[to]
    return [*named, out / f"{channel}_tiles.json"]


def _clear(out: Path, to: str, channel: str, overwrite: bool) -> None:
    present = [p for p in _outputs(out, to, channel) if p.exists()]
    if present and not overwrite:
        raise UserError(
            f"{present[0]} already exists; pass --overwrite to replace this channel's tiles, "
            "or choose another --out or --channel"
        )
    for p in present:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _index(
    result: TileResult, tiles: list[Tile], written: list[Sample], options: TileOptions
) -> dict:
    """Each tile's place in the output (a file, or a record of the .rec), its source image
    and window, and the source boxes it holds."""
    rows = []
    for i, (t, sample) in enumerate(zip(tiles, written, strict=True)):
        w = t.window
        place = {"record": i} if result.to == "recordio" else {"file": f"{Path(sample.image).name}"}
        rows.append(
            {
                "tile": t.name,
                **place,
                "source": t.source.image,
                "source_key": t.source.key,
                "window": [w.x0, w.y0, w.x1, w.y1],
                "source_boxes": t.source_boxes,
            }
        )
    summary = {k: v for k, v in result.to_dict().items() if k not in ("files", "lost")}
    return {"options": asdict(options), "summary": summary, "tiles": rows, "lost": result.lost}


def tile(
    sampleset: SampleSet,
    options: TileOptions,
    *,
    to: str,
    out: str | Path,
    channel: str = "train",
    overwrite: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> TileResult:
    """Cut every image of `sampleset` into tiles and write them as `to` under `out`, with
    `<out>/<channel>_tiles.json` tracing each tile to its source image and window."""
    if to not in TARGETS:
        raise UserError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    if not channel.replace("_", "").isalnum():
        raise UserError(f"--channel {channel!r} must be a plain name such as train or validation")
    started, out = time.monotonic(), Path(out)
    result = TileResult(to, str(out), str(out / f"{channel}_tiles.json"))
    tiles = plan(sampleset, options, result)
    if not tiles:
        raise UserError(
            f"no tile to write: none of the {result.windows} tiles holds a box and "
            f"--empty-rate {options.empty_rate} keeps none of the empty ones"
        )
    check_images(tiles, options.max_pixels)
    _clear(out, to, channel, overwrite)
    log(f"tile: {len(sampleset)} image(s) into {len(tiles)} tiles of {options.size} pixels")
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiling-", dir=out))
    try:
        samples = write_tiles(sampleset, tiles, staging, options, log)
        written = convert(SampleSet(samples, sampleset.categories), to=to, out=out, channel=channel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.files = written.files
    result.seconds = round(time.monotonic() - started, 3)
    atomic_write_json(result.index, _index(result, tiles, samples, options))
    return result
