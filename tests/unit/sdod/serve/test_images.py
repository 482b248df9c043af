"""The shared image decoder: JPEG/PNG only, pixels bounded from the header, JPEG at a
reduced DCT scale when the model needs fewer pixels, messages without object addresses;
and the request options' parser."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from sdod.errors import DataError, UserError
from sdod.serve.images import declared_size, decode_image, without_addresses
from sdod.serve.options import ServeOptions as Limits
from sdod.serve.options import parse_options


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def _gradient(width: int, height: int) -> Image.Image:
    return Image.linear_gradient("L").resize((width, height)).convert("RGB")


def test_a_large_jpeg_decodes_at_the_smallest_scale_that_covers_the_model() -> None:
    data = _encode(_gradient(4000, 3000), "JPEG")
    assert decode_image(data, "x", max_pixels=40_000_000, min_size=300).shape == (3, 375, 500)
    assert decode_image(data, "x", max_pixels=40_000_000, min_size=1000).shape == (3, 1500, 2000)
    assert decode_image(data, "x", max_pixels=40_000_000).shape == (3, 3000, 4000)
    png = _encode(_gradient(800, 600), "PNG")  # PNG has no reduced decode
    assert decode_image(png, "x", max_pixels=10**6, min_size=300).shape == (3, 600, 800)


def test_grayscale_palette_and_alpha_images_become_rgb() -> None:
    for mode in ("L", "P", "RGBA", "LA", "1", "I;16"):
        data = _encode(Image.new(mode, (20, 10)), "PNG")
        assert decode_image(data, "x", max_pixels=1000).shape == (3, 10, 20), mode
    cmyk = _encode(Image.new("CMYK", (20, 10)), "JPEG")
    assert decode_image(cmyk, "x", max_pixels=1000).shape == (3, 10, 20)


def test_the_pixel_budget_is_read_from_the_header() -> None:
    data = bytearray(_encode(_gradient(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 13000, 12000)  # height, width
    assert declared_size(bytes(data), "JPEG", "x") == (12000, 13000)
    with pytest.raises(DataError) as info:
        decode_image(bytes(data), "upload.jpg", max_pixels=40_000_000)
    assert info.value.rule == "image_pixels" and info.value.where == "upload.jpg"
    assert "12000 x 13000" in str(info.value) and "40000000" in str(info.value)
    png = _encode(Image.new("1", (3000, 2000)), "PNG")
    assert declared_size(png, "PNG", "x") == (3000, 2000)
    with pytest.raises(DataError, match="3000 x 2000") as info:
        decode_image(png, "x", max_pixels=5_999_999)
    assert info.value.rule == "image_pixels"


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM"])
def test_only_jpeg_and_png_are_opened(fmt: str) -> None:
    with pytest.raises(DataError, match="JPEG or PNG") as info:
        decode_image(_encode(Image.new("RGB", (8, 8)), fmt), "x", max_pixels=1000)
    assert info.value.rule == "image_format"


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30],
)
def test_broken_headers_are_image_decodes(data: bytes) -> None:
    with pytest.raises(DataError) as info:
        decode_image(data, "x", max_pixels=1000)
    assert info.value.rule in {"image_decodes", "image_format"}
    assert "0x" not in str(info.value)


def test_a_truncated_jpeg_does_not_decode_and_names_no_object() -> None:
    data = _encode(_gradient(64, 64), "JPEG")
    with pytest.raises(DataError, match="does not decode") as info:
        decode_image(data[: len(data) // 2], "x", max_pixels=10_000)
    assert info.value.rule == "image_decodes" and " at 0x" not in str(info.value)
    text = "cannot identify image file <_io.BytesIO object at 0x7f3a2c1d9e40>"
    assert without_addresses(text) == "cannot identify image file"


def test_options_take_plain_decimal_numbers_only() -> None:
    assert parse_options("", None) == (0.0, None)
    assert parse_options("top_k=3", "score_threshold=0.5,top_k=9,other=x") == (0.5, 3)
    assert parse_options("", " score_threshold = .25 , top_k=1 ") == (0.25, 1)
    bad_attributes = ["top_k", "top_k=1_0", "top_k=\u0663", "score_threshold=nan", "=1", "a" * 1025]
    for attributes in bad_attributes:
        with pytest.raises(UserError, match="Custom-Attributes"):
            parse_options("", attributes)
    for query in ("top_k=0", "top_k=-1", "score_threshold=1.5", "score_threshold=inf"):
        with pytest.raises(UserError, match="query"):
            parse_options(query, None)


def test_limits_are_positive_and_finite() -> None:
    assert Limits(timeout=2.5, max_connections=1).max_connections == 1
    for bad in ({"timeout": float("inf")}, {"timeout": float("nan")}, {"max_connections": 0}):
        with pytest.raises(UserError, match="must be a positive number"):
            Limits(**bad)
