"""Untrusted image bytes to pixels, bounded before a pixel is decoded.

The rules every inference path shares (`sdod serve`, `sdod predict`, batch inference):

- **Formats**: JPEG and PNG only, told by their first bytes; Pillow is asked to open
  nothing else, so EPS/PostScript never reaches Ghostscript and GIF, TIFF, BMP, WebP, ICO,
  ... are refused (`image_format`; HTTP 415).
- **Pixels**: width x height is read from the header (JPEG SOF, PNG IHDR) and refused
  above `max_pixels` before decoding (`image_pixels`; HTTP 413). A 633-byte JPEG can
  declare 13000 x 13000 pixels: 169 M pixels, 0.5 GB of RGB, seconds of CPU.
- **Scale**: a JPEG is decoded at a reduced scale (libjpeg's DCT scaling, 1/2, 1/4 or 1/8,
  through `Image.draft`) when the model's `image_shape` needs fewer pixels; a 4000 x 3000
  photo for a 300-pixel model decodes as 500 x 375.
- **Messages** name the input and the rule, never a Python object's repr or address.
"""

from __future__ import annotations

import io
import re
import struct

import numpy as np
import torch
from PIL import Image

from sdod.errors import DataError

FORMATS = {"JPEG": b"\xff\xd8\xff", "PNG": b"\x89PNG\r\n\x1a\n"}
ALLOWED = "JPEG or PNG"
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC
DEFAULT_MAX_PIXELS = 40_000_000  # 40 M pixels: a 7300 x 5470 photo; 120 MB as RGB
_OBJECT_REPR = re.compile(r"\s*<[^<>]*\bat 0x[0-9a-fA-F]+>")


def without_addresses(text: str) -> str:
    """`text` without Python object reprs such as `<_io.BytesIO object at 0x7f...>`."""
    return _OBJECT_REPR.sub("", text)


def _refuse(where: str, rule: str, reason: str) -> DataError:
    return DataError(f"{where}: {reason}", rule=rule, where=where, reason=reason)


def sniff_format(data: bytes, where: str) -> str:
    """The format of `data` from its first bytes ("JPEG" or "PNG"); anything else refused."""
    for name, magic in FORMATS.items():
        if data.startswith(magic):
            return name
    head = data[:8].hex(" ") if data else "(empty)"
    raise _refuse(
        where,
        "image_format",
        f"not a {ALLOWED} image (first bytes {head}); only {ALLOWED} images are accepted",
    )


def decode_image(
    data: bytes, where: str, *, max_pixels: int, min_size: int | None = None
) -> torch.Tensor:
    """uint8 `[3, H, W]` RGB from JPEG/PNG bytes, at most `max_pixels` declared pixels.

    With `min_size`, a JPEG is decoded at the smallest DCT scale (1, 1/2, 1/4, 1/8) that
    keeps both sides at least `min_size`; PNG is always decoded at full size.
    """
    fmt = sniff_format(data, where)
    _check_pixels(declared_size(data, fmt, where), where, max_pixels)
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            _check_pixels(im.size, where, max_pixels)
            if min_size is not None and fmt == "JPEG":
                im.draft("RGB", (min_size, min_size))
            rgb = np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling, above ours
        raise _refuse(where, "image_pixels", without_addresses(str(exc))) from None
    except Exception as exc:  # Pillow raises many types for broken data
        reason = f"the image does not decode ({without_addresses(str(exc)) or type(exc).__name__})"
        raise _refuse(where, "image_decodes", reason) from None
    if rgb.ndim != 3 or 0 in rgb.shape:
        raise _refuse(where, "image_decodes", f"the image does not decode (no pixels: {rgb.shape})")
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def declared_size(data: bytes, fmt: str, where: str) -> tuple[int, int]:
    """(width, height) as the PNG IHDR or the JPEG frame header (SOFn) declares them,
    read without Pillow (whose own ceiling warns at 89 M pixels and refuses at 179 M)."""
    if fmt == "PNG":
        if data[12:16] != b"IHDR" or len(data) < 24:
            raise _refuse(
                where, "image_decodes", "the image does not decode (a PNG without its IHDR header)"
            )
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # fill, no length
            i += 1 if marker == 0xFF else 2
            continue
        if marker in SOF_MARKERS:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker == 0xDA:  # image data before any frame header
            break
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    raise _refuse(
        where, "image_decodes", "the image does not decode (a JPEG without a frame header)"
    )


def _check_pixels(size: tuple[int, int], where: str, max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise _refuse(
            where, "image_decodes", f"the image does not decode ({width} x {height} pixels)"
        )
    if width * height > max_pixels:
        raise _refuse(
            where,
            "image_pixels",
            f"the image declares {width} x {height} = {width * height} pixels, over the "
            f"limit of {max_pixels}; send a smaller image (the model sees it at its "
            "image_shape anyway)",
        )
