"""`sdod serve`: uvicorn running `sdod.serve.app.Endpoint`, in one process or several.

One worker serves in this process. With several, this process binds the socket, prints
the address and supervises uvicorn's worker processes (restarted if one dies), each
loading its own model and taking `cpus / workers` threads; any worker answers
`/metrics` for all (prometheus_client's multiprocess folder, made here and removed after).

SIGTERM (or Ctrl-C) drains: the listening socket closes, requests already accepted are
answered (up to `graceful_timeout` seconds), then the workers stop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sdod.errors import UserError
from sdod.serve.options import ServeOptions, default_workers
from sdod.serve.shared import create_count_file

SPEC_ENV = "SDOD_SERVE_SPEC"  # the model and options, for worker processes
# a worker answers the supervisor's ping from a thread once it has imported torch and
# uvicorn; on a busy machine that takes more than uvicorn's 5 s (which then restarts it)
HEALTHCHECK_S = 120


@dataclass(frozen=True)
class ServeSpec:
    """What every worker loads and how it serves."""

    model: str  # a local model.tar.gz (or its folder)
    backend: str = "torch"
    device: str = "cpu"
    max_pixels: int = 0
    name: str = "model"
    threads: int = 0  # torch threads per worker (0: torch's default)
    count_file: str = ""  # the connections count the workers share (sdod.serve.shared)
    options: ServeOptions = field(default_factory=ServeOptions)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSpec:
        raw = json.loads(text)
        return cls(**{**raw, "options": ServeOptions(**raw["options"])})


def build_endpoint(spec: ServeSpec) -> Any:
    """The ASGI app for `spec`, its model loaded (and the protocol configured)."""
    import torch

    from sdod.serve.app import Endpoint
    from sdod.serve.images import DEFAULT_MAX_PIXELS
    from sdod.serve.predictor import Predictor
    from sdod.serve.protocol import configure

    if spec.threads:
        torch.set_num_threads(spec.threads)
    configure(spec.options, spec.count_file or None)  # a dead worker's slot freed at once
    pixels = spec.max_pixels or DEFAULT_MAX_PIXELS
    predictor = Predictor.load(
        spec.model, backend=spec.backend, device=spec.device, max_pixels=pixels
    )
    platform = "onnxruntime_onnx" if spec.backend == "onnxruntime" else "pytorch_libtorch"
    return Endpoint(predictor, spec.options, name=spec.name, platform=platform)


def create_app() -> Any:
    """uvicorn's app factory in a worker process: the spec from the environment."""
    return build_endpoint(ServeSpec.from_json(os.environ[SPEC_ENV]))


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def workers_for(spec: ServeSpec) -> int:
    if spec.options.workers:
        return spec.options.workers
    path = Path(spec.model)
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*"))
    return default_workers(size)


def _config(app: Any, spec: ServeSpec, workers: int) -> Any:
    import uvicorn

    from sdod.serve.protocol import MAX_HEAD, BoundedProtocol

    return uvicorn.Config(
        app, factory=isinstance(app, str), interface="asgi3", http=BoundedProtocol, ws="none",
        lifespan="on", workers=workers, log_level="warning", access_log=False,
        timeout_keep_alive=max(1, round(spec.options.keep_alive)),
        timeout_graceful_shutdown=max(1, round(spec.options.graceful_timeout)),
        h11_max_incomplete_event_size=MAX_HEAD, server_header=False,
        timeout_worker_healthcheck=HEALTHCHECK_S,
    )  # fmt: skip


def serve(spec: ServeSpec, host: str, port: int, announce: Any = print) -> None:
    """Serve until SIGTERM/SIGINT; `announce(url, workers)` once the socket listens."""
    import uvicorn

    workers = workers_for(spec)
    if workers == 1:
        app = build_endpoint(spec)  # a bad model fails here, before the socket opens
        sock = bind(host, port)
        announce(_url(host, sock), 1)
        # uvicorn drains on SIGTERM/SIGINT, then raises the signal again under the handler
        # it found: let that be a quiet one, so that a drained server exits 0
        quiet = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            uvicorn.Server(_config(app, spec, 1)).run(sockets=[sock])
        finally:
            for number, handler in quiet.items():
                signal.signal(number, handler)
        return
    from sdod.serve.predictor import Predictor

    Predictor.load(spec.model, backend=spec.backend)  # a bad model fails here, once
    cpus = len(os.sched_getaffinity(0))
    folder = tempfile.mkdtemp(prefix="sdod-serve-")
    threads = max(1, cpus // workers)
    spec = replace(spec, threads=threads, count_file=create_count_file(folder))
    metrics = Path(folder) / "metrics"
    metrics.mkdir()
    os.environ.update({SPEC_ENV: spec.to_json(), "PROMETHEUS_MULTIPROC_DIR": str(metrics)})
    try:
        sock = bind(host, port)
        url = _url(host, sock)
        threading.Thread(
            target=_announce_when_ready, args=(url, workers, announce), daemon=True
        ).start()
        config = _config("sdod.serve.server:create_app", spec, workers)
        _supervisor_class()(config, sockets=[sock]).run()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _supervisor_class() -> Any:
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        """uvicorn's supervisor, closing its own copy of the listening socket when told to
        stop, so that the kernel stops accepting connections nobody would answer while
        the workers drain."""

        def _close_sockets(self) -> None:
            for sock in self.sockets:
                sock.close()

        def handle_term(self) -> None:
            self._close_sockets()
            super().handle_term()

        def handle_int(self) -> None:
            self._close_sockets()
            super().handle_int()

    return Supervisor


def _announce_when_ready(url: str, workers: int, announce: Any, limit: float = 600) -> None:
    """Announce once a worker answers `/ping` (the workers load their models after the
    socket opens; until one is ready, connections wait in the backlog)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = "127.0.0.1" if parts.hostname in ("0.0.0.0", "::") else parts.hostname
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(host or "127.0.0.1", parts.port, timeout=5)
            conn.request("GET", "/ping", headers={"Host": "sdod"})
            if conn.getresponse().status == 200:
                break
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    announce(url, workers)


def _url(host: str, sock: socket.socket) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{sock.getsockname()[1]}"
