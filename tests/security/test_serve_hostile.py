"""`sdod serve` against hostile clients, through a real server process and raw sockets:
decompression bombs, formats other than JPEG/PNG, malformed headers, idle and trickling
clients, more connections than the cap. Every refusal is a 4xx JSON error without a Python
object address, and the server goes on answering."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.conftest import Server, parse_response, post, read_all, start_server

ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}|<[^<>]* object\b")


def jpeg(width: int, height: int) -> bytes:
    """A real JPEG (a smooth gradient: small at any size)."""
    from PIL import Image

    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def jpeg_bomb(width: int = 13000, height: int = 13000) -> bytes:
    """A 16 x 16 JPEG whose frame header (SOF0) declares `width` x `height` pixels."""
    data = bytearray(jpeg(16, 16))
    i = 2
    while data[i + 1] != 0xC0:
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_bomb(side: int = 13000) -> bytes:
    """A real 1-bit PNG of `side` x `side` zeros: ~20 KB that decode to `side`² pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" * (1 + (side + 7) // 8)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    idat = zlib.compress(row * side, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def assert_refused(server: Server, raw: bytes, statuses: set[int]) -> dict[str, str]:
    """The server answers `raw` with one of `statuses`, a JSON error without an object
    address, and is alive afterwards; returns the body."""
    response = server.send(raw)
    assert response.status in statuses, (response.status, response.body[:300])
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and body["error"], body
    assert not ADDRESS.search(body["error"]), body
    assert server.ping() == 200
    return body


def test_a_jpeg_bomb_is_refused_at_once_and_a_large_photo_is_predicted(server: Server) -> None:
    bomb = jpeg_bomb()
    assert len(bomb) < 1000
    before = server.rss_mib()
    for _ in range(3):
        started = time.monotonic()
        body = assert_refused(server, post("/invocations", bomb), {413})
        assert time.monotonic() - started < 1.0
        assert "13000 x 13000" in body["error"] and "limit" in body["error"]
    body = assert_refused(server, post("/invocations", png_bomb(), ctype="image/png"), {413})
    assert "13000 x 13000" in body["error"]
    assert server.rss_mib() - before < 200  # decoding the bomb took 2.3 GB
    # a 12 M-pixel photo is legal: decoded at 1/8 scale (500 x 375) for the 300-pixel model
    response = server.send(post("/invocations?top_k=3", jpeg(4000, 3000)))
    assert response.status == 200, response.body
    rows = response.json()["prediction"]
    assert len(rows) == 3 and all(len(row) == 6 for row in rows)
    assert "Traceback" not in server.log()


def _formats() -> dict[str, bytes]:
    from PIL import Image

    out = {}
    for fmt in ("GIF", "TIFF", "BMP", "WEBP", "ICO"):
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, fmt)
        out[fmt] = buf.getvalue()
    eps = "%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nnewpath 0 0 moveto showpage\n"
    out["EPS"] = eps.encode()
    return out


@pytest.mark.parametrize("fmt", ["EPS", "GIF", "TIFF", "BMP", "WEBP", "ICO"])
def test_formats_other_than_jpeg_and_png_are_refused(server: Server, fmt: str) -> None:
    for ctype in ("image/jpeg", "application/x-image"):
        raw = post("/invocations", _formats()[fmt], ctype=ctype)
        body = assert_refused(server, raw, {415})
        assert "JPEG or PNG" in body["error"], body


def test_broken_images_are_4xx_without_object_addresses(server: Server) -> None:
    bodies = {
        "text": b"not an image at all",
        "empty": b"",
        "truncated-jpeg": b"\xff\xd8\xff\xe0 truncated",
        "broken-png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        "png-without-data": png_bomb(16)[:33] + b"\x00\x00\x00\x00IEND\xaeB`\x82",
    }
    for body in bodies.values():
        assert_refused(server, post("/invocations", body), {400, 415})


CONTENT_LENGTHS = {
    "superscript-latin1": b"\xb2",  # "²" to http.server: str.isdigit() says yes, int() no
    "superscript-utf8": "²".encode(),
    "arabic-indic": "\u0663".encode(),
    "negative": b"-1",
    "exponent": b"1e3",
    "inner-space": b"1 2",
    "hex": b"0x10",
    "plus": b"+5",
    "huge": b"9" * 5000,  # int() refuses over 4300 digits
}


@pytest.mark.parametrize("name", CONTENT_LENGTHS)
def test_malformed_content_length_is_a_4xx(server: Server, name: str) -> None:
    raw = (
        b"POST /invocations HTTP/1.1\r\nHost: sdod\r\nContent-Type: image/jpeg\r\nContent-Length: "
    )
    assert_refused(server, raw + CONTENT_LENGTHS[name] + b"\r\n\r\nabc", {400, 413})
    assert "Traceback" not in server.log()


def test_missing_conflicting_or_chunked_lengths_are_4xx(server: Server) -> None:
    head = b"POST /invocations HTTP/1.1\r\nHost: sdod\r\nContent-Type: image/jpeg\r\n"
    assert_refused(server, head + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", {411})
    assert_refused(server, head + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", {400})
    assert_refused(server, head + b"Content-Length: 10\r\n\r\nabc", {400})  # body cut short
    assert_refused(server, head + b"\r\nabc", {411})
    assert_refused(server, head + b"Content-Length: 21000000000\r\n\r\n", {413})


@pytest.mark.parametrize(
    "attributes",
    [
        "top_k",
        "top_k=abc",
        "top_k=0",
        "top_k=\u0661",
        "top_k=1_0",
        "score_threshold=nan",
        "score_threshold=2",
        "score_threshold=",
        "=3",
        "top_k=3,score_threshold=inf",
        "x" * 2000,
        "top_k=\x01",
    ],
)
def test_malformed_custom_attributes_are_400(server: Server, attributes: str) -> None:
    header = f"X-Amzn-SageMaker-Custom-Attributes: {attributes}"
    raw = post("/invocations", jpeg(64, 48), header)
    assert "X-Amzn-SageMaker-Custom-Attributes" in assert_refused(server, raw, {400})["error"]


def test_malformed_query_options_are_400(server: Server) -> None:
    """int() and float() take more than a decimal number: "1_0", "%D9%A3" (Arabic 3)."""
    for query in ("top_k=-1", "top_k=2.5", "top_k=1_0", "top_k=%D9%A3", "score_threshold=1e999"):
        assert_refused(server, post(f"/invocations?{query}", jpeg(64, 48)), {400})


MALFORMED = {
    "blank": (b"\r\n\r\n", 400),
    "one-word": (b"garbage\r\n\r\n", 400),
    "http2": (b"GET /ping HTTP/2.0\r\n\r\n", 400),
    "bad-version": (b"GET /ping HTTP/1.x\r\n\r\n", 400),
    "no-host": (b"GET /ping HTTP/1.1\r\n\r\n", 400),  # RFC 9112: HTTP/1.1 needs Host
    "brew": (b"BREW /ping HTTP/1.1\r\nHost: s\r\n\r\n", 405),
    "delete": (b"DELETE /invocations HTTP/1.1\r\nHost: s\r\n\r\n", 405),
    "post-ping": (b"POST /ping HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n", 405),
    "get-invocations": (b"GET /invocations HTTP/1.1\r\nHost: s\r\n\r\n", 405),
    "dotdot": (b"GET /../../etc/passwd HTTP/1.1\r\nHost: s\r\n\r\n", 404),
    "bad-ipv6-url": (
        b"POST http://[::1/invocations HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n",
        404,
    ),
    "long-header": (b"GET /ping HTTP/1.1\r\nHost: s\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431),
    "many-headers": (b"GET /ping HTTP/1.1\r\nHost: s\r\n" + b"X: a\r\n" * 200 + b"\r\n", 431),
    "long-line": (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: s\r\n\r\n", 414),
}


def test_malformed_requests_are_4xx_json(server: Server) -> None:
    """Each answered with its status as JSON (http.server's own answers were HTML, 501 for
    an unknown method, 505 for HTTP/2.0, nothing at all for a blank line)."""
    for name, (raw, status) in MALFORMED.items():
        response = server.send(raw)
        assert response.status == status, (name, response.status, response.body[:200])
        assert "error" in response.json(), name
    assert server.ping() == 200
    assert "Traceback" not in server.log()


@pytest.fixture(scope="module")
def strict_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a 2 s timeout and a cap of 3 connections."""
    started = start_server(
        tiny_model, tmp_path_factory.mktemp("strict"), "--timeout", "2", "--max-connections", "3"
    )
    try:
        yield started
    finally:
        started.stop()


def _connect(server: Server, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(data)
    return sock


def test_idle_and_trickling_clients_are_dropped_after_the_timeout(strict_server: Server) -> None:
    started = time.monotonic()
    headers_only = (
        b"POST /invocations HTTP/1.1\r\nHost: s\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 500\r\n\r\n"
    )
    idle = _connect(strict_server, headers_only)  # and then nothing
    trickle = _connect(strict_server, b"POST /invocations HTTP/1.1\r\n")
    served = 0
    while time.monotonic() - started < 1.5:  # others are served meanwhile
        with contextlib.suppress(OSError):
            trickle.send(b"X")
        assert strict_server.ping() == 200
        served += 1
    assert served >= 3
    for sock in (idle, trickle):
        response = parse_response(read_all(sock))  # the server closes after answering
        sock.close()
        assert response.status == 408 and "within 2 s" in response.json()["error"]
    assert time.monotonic() - started < 2 + 1.5
    assert strict_server.ping() == 200


def test_connections_beyond_the_cap_get_a_quick_503(strict_server: Server) -> None:
    holders = [_connect(strict_server, b"GET /pi") for _ in range(3)]
    time.sleep(0.3)  # all three accepted and waiting for their request
    started = time.monotonic()
    response = strict_server.send(b"GET /ping HTTP/1.1\r\n\r\n")
    assert time.monotonic() - started < 1.0
    assert response.status == 503 and response.headers["retry-after"].isdigit()
    assert "connections" in response.json()["error"]
    for sock in holders:
        sock.close()
    deadline = time.monotonic() + 3
    while strict_server.ping() != 200:  # their slots come back
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "Traceback" not in strict_server.log()


def test_predict_and_batch_predict_refuse_the_bomb_too(tiny_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.jpg").write_bytes(jpeg_bomb())
    (folder / "ok.jpg").write_bytes(jpeg(640, 480))
    started = time.monotonic()
    cmd = [sys.executable, "-m", "sdod", "predict", "--model", str(tiny_model)]
    result = subprocess.run([*cmd, str(folder / "bomb.jpg")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "13000 x 13000" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "bomb.jpg" in result.stderr
    batch = [sys.executable, "-m", "sdod", "batch-predict", "--model", str(tiny_model), "--json"]
    out = tmp_path / "out"
    result = subprocess.run(
        [*batch, "--input", str(folder), "--output", str(out)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["written"] == 1 and len(summary["failed"]) == 1
    assert "13000 x 13000" in summary["failed"][0]["error"]
    assert time.monotonic() - started < 60


def test_serve_refuses_a_limit_that_is_not_positive(tiny_model: Path) -> None:
    cmd = [sys.executable, "-m", "sdod", "serve", "--model", str(tiny_model), "--port", "0"]
    result = subprocess.run([*cmd, "--timeout", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--timeout must be a positive number" in result.stderr
