"""Fixtures shared by the hostile-input tests: the real S3 endpoint (moto's server) of the
integration tests, small real model archives, and `sdod serve` as a real process spoken to
over raw sockets (`start_server`, `server`, `parse_response`)."""

from __future__ import annotations

import json
import re
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sdod.model.networks import build_network
from tests.integration.conftest import S3Endpoint, s3_endpoint  # noqa: F401 - a fixture

__all__ = ["S3Endpoint"]


def write_tiny_model(path: Path, *, metrics: dict | None = None, seed: int = 0) -> Path:
    """A real, loadable, untrained resnet-lite archive (2 classes at 300 pixels); `seed`
    makes its weights (and so its bytes) differ from another's."""
    import torch
    from safetensors.torch import save

    from sdod.artifact import Artifact, ModelConfig, write_artifact

    torch.manual_seed(seed)
    config = ModelConfig("resnet-lite", 2, 300, ("cat", "dog"))
    state = {k: v.contiguous() for k, v in build_network(config).state_dict().items()}
    hp = {"base_network": "resnet-lite", "num_classes": "2", "image_shape": "300"}
    artifact = Artifact(save(state), hp, config.to_dict(), metrics or {"validation:mAP": 0.5})
    return write_artifact(path, artifact)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model.tar.gz")


def noise_jpeg(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    """A JPEG of random pixels, `size` = (width, height): a real image no model knows."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG")
    return buf.getvalue()


# --- `sdod serve` as a real process, spoken to over raw sockets (any server that
# `python -m sdod serve` starts: the HTTP tests never import the server's code) ---


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_response(raw: bytes) -> Response:
    """A well-formed HTTP/1.x response or an AssertionError saying what is wrong: status
    line, headers, a Content-Length that matches the body. Interim 1xx responses (a
    `100 Continue` to `Expect: 100-continue`) before it are skipped, as clients do."""
    while re.match(rb"HTTP/1\.[01] 1\d\d ", raw):
        raw = raw.partition(b"\r\n\r\n")[2]
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no end of headers in {raw[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    match = re.fullmatch(r"HTTP/1\.[01] (\d{3}) [^\r\n]*", lines[0])
    assert match, f"bad status line {lines[0]!r}"
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        assert colon and re.fullmatch(r"[!-9;-~]+", name), f"bad header line {line!r}"
        headers[name.lower()] = value.strip()
    assert headers.get("content-length") == str(len(body)), (headers, len(body))
    return Response(int(match.group(1)), headers, body)


def exchange(port: int, data: bytes, *, timeout: float = 30.0, half_close: bool = True) -> bytes:
    """Send `data` on a fresh connection (then, with `half_close`, end the request side)
    and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def post(path: str, body: bytes, *headers: str, ctype: str = "image/jpeg") -> bytes:
    """A raw POST request (HTTP/1.1) with the given extra header lines."""
    lines = [f"POST {path} HTTP/1.1", "Host: sdod", f"Content-Type: {ctype}"]
    lines += [*headers, f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


@dataclass
class Server:
    """`python -m sdod serve --model M --port 0 ...` in its own process; its log in a file."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def send(self, data: bytes, **kwargs: Any) -> Response:
        return parse_response(exchange(self.port, data, **kwargs))

    def ping(self) -> int:
        return self.send(b"GET /ping HTTP/1.1\r\nHost: sdod\r\n\r\n").status

    def rss_mib(self) -> float:
        """Resident memory of the server and its worker processes together."""
        total, pids = 0.0, [self.proc.pid]
        while pids:
            pid = pids.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_server(model: Path, log_dir: Path, *options: str) -> Server:
    """Start `sdod serve` on a free port and wait (up to 120 s) for its first line."""
    log_path = log_dir / "serve.log"
    cmd = [sys.executable, "-m", "sdod", "serve", "--model", str(model), "--port", "0"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*cmd, *options], stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline().decode() if ready else ""
    match = re.search(r"http://[^:\s]+:(\d+)", line)
    if match is None:
        proc.kill()
        raise AssertionError(f"sdod serve did not start: {line!r} {log_path.read_text()}")
    return Server(proc, int(match.group(1)), log_path)


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`sdod serve` with its default limits, for a module of tests."""
    started = start_server(tiny_model, tmp_path_factory.mktemp("serve"))
    try:
        yield started
    finally:
        started.stop()
