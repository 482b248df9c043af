"""A bounded, seeded fuzz of `sdod serve`'s request parsing over real sockets: random
request lines, headers and bodies (with the known-tricky values mixed in) sent to a live
server. Every answer must be a well-formed HTTP response with a status the API documents
(never a 5xx other than 503, never silence), a JSON body without Python object addresses,
and the server must still answer `/ping` afterwards with no traceback in its log."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.conftest import Server, exchange, parse_response, start_server

STATUSES = {200, 400, 404, 405, 408, 411, 413, 414, 415, 431, 503}
ADDRESS = re.compile(rb"0x[0-9a-fA-F]{6,}|<[^<>]* object\b")


def _image(fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, fmt)
    return buf.getvalue()


def _ascii(max_size: int) -> st.SearchStrategy[bytes]:
    return st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=max_size).map(
        lambda s: s.encode("latin-1")
    )


def _mostly(valid: list[bytes], junk_size: int) -> st.SearchStrategy[bytes]:
    """One of `valid` four times in five, else random bytes."""
    return st.integers(0, 4).flatmap(lambda n: st.sampled_from(valid) if n else _ascii(junk_size))


METHODS = _mostly([b"POST", b"POST", b"GET", b"HEAD", b"PUT", b"DELETE", b"get"], 8)
TARGETS = _mostly(
    [
        b"/invocations",
        b"/invocations",
        b"/ping",
        b"/endpoints/my-endpoint/invocations",
        b"/endpoints/bad_name!/invocations",
        b"//invocations",
        b"/invocations?top_k=2&score_threshold=0.1",
        b"/invocations?top_k=%D9%A3",
        b"/invocations?top_k=1&top_k=x",
        b"/invocations?score_threshold=-0",
        b"http://[::1/invocations",
        b"*",
    ],
    40,
)
VERSIONS = _mostly(
    [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1", b"HTTP/1.1.1"], 12
)
LENGTHS = st.sampled_from(
    ["0", "-1", "\xb2", "\u0663", "1e3", "+4", " 7 ", "0x10", "9" * 30, "9" * 5000, ""]
) | st.integers(0, 3000).map(str)
TYPES = st.sampled_from(["image/jpeg", "image/png", "application/x-image", "text/plain", ""])
ATTRIBUTES = st.lists(
    st.sampled_from(
        [
            "top_k=3",
            "top_k=0",
            "top_k=x",
            "score_threshold=0.5",
            "score_threshold=nan",
            "=",
            "k",
            "a=b",
            "top_k=\u0663",
            "score_threshold=1e400",
            "",
        ]
    ),
    max_size=4,
).map(",".join)
_TEXT = _ascii(40).map(lambda b: b.decode("latin-1"))
HEADERS = st.one_of(
    st.tuples(st.just("Content-Length"), LENGTHS),
    st.tuples(st.just("Content-Type"), TYPES),
    st.tuples(st.just("X-Amzn-SageMaker-Custom-Attributes"), ATTRIBUTES),
    st.tuples(
        st.sampled_from(["Transfer-Encoding", "Connection", "Expect", "Host"]),
        st.sampled_from(["chunked", "keep-alive", "close", "100-continue", "x"]),
    ),
    st.tuples(_TEXT, _TEXT),
)
BODIES = st.one_of(
    st.sampled_from([_image("JPEG"), _image("PNG"), _image("GIF"), _image("BMP"), b""]),
    st.binary(max_size=2000),
    st.sampled_from([_image("JPEG"), _image("PNG")]).flatmap(  # a real image, cut or bent
        lambda image: st.tuples(st.integers(0, len(image)), st.binary(max_size=8)).map(
            lambda cut: image[: cut[0]] + cut[1] + image[cut[0] + len(cut[1]) :]
        )
    ),
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A request as bytes: two in three nearly valid (a known line, a Content-Type and a
    truthful Content-Length: the options and the image are judged), the rest chaos (parts
    missing or random, any headers, cut short)."""
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    parts = [draw(METHODS), draw(TARGETS), draw(VERSIONS)]
    body = draw(BODIES)
    headers = draw(st.lists(HEADERS, max_size=4))
    chaos = draw(st.integers(0, 2)) == 0
    if chaos and draw(st.booleans()):
        parts = parts[: draw(st.integers(0, 2))]
    if not chaos:
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers += [("Content-Type", draw(TYPES)), ("Content-Length", str(len(body)))]
    head = b"".join(f"{k}: {v}".encode() + eol for k, v in headers)
    raw = b" ".join(parts) + eol + head + eol + body
    return raw[: draw(st.integers(1, len(raw)))] if chaos and draw(st.booleans()) else raw


@pytest.fixture(scope="module")
def fuzzed(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose timeout (3 s) bounds any request the fuzz leaves unfinished."""
    started = start_server(tiny_model, tmp_path_factory.mktemp("fuzz"), "--timeout", "3")
    try:
        yield started
    finally:
        started.stop()


def check_answer(request: bytes, raw: bytes) -> None:
    """A well-formed response with a documented status and a JSON body (or nothing for a
    connection that sent nothing)."""
    if not request.strip(b"\r\n \t"):
        assert raw == b"" or parse_response(raw).status == 400
        return
    response = parse_response(raw)
    assert response.status in STATUSES, (response.status, request[:300], raw[:300])
    assert not ADDRESS.search(response.body), response.body
    if response.body:
        body = json.loads(response.body)
        assert ("prediction" in body) if response.status == 200 else ("error" in body), body


def test_the_request_parser_answers_every_request_with_a_4xx_or_200(fuzzed: Server) -> None:
    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests())
    def one(request: bytes) -> None:
        check_answer(request, exchange(fuzzed.port, request, timeout=30))

    one()
    assert fuzzed.ping() == 200
    assert "Traceback" not in fuzzed.log()
