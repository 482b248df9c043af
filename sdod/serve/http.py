"""The SageMaker inference-container contract over HTTP: `GET /ping`, `POST /invocations`,
and the runtime API's `POST /endpoints/{EndpointName}/invocations`, so boto3's
`sagemaker-runtime` `invoke_endpoint` and the SageMaker SDK's `Predictor` work unchanged
against `endpoint_url=http://host:port` (their SigV4 signature is not checked: put the
server behind your own authentication when it is reachable by others).

Request: the image bytes with `Content-Type` `application/x-image`, `image/jpeg` or
`image/png`. Optional `score_threshold` and `top_k`, as query parameters or in SageMaker's
`X-Amzn-SageMaker-Custom-Attributes` header (`score_threshold=0.5,top_k=10`). Response: the
prediction JSON. Errors are JSON `{"error": "..."}` with 400 (bad image or parameter), 404,
411 (no length), 413 (body too large) or 415 (content type).
"""

from __future__ import annotations

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from sdod.errors import UserError
from sdod.serve.predictor import Predictor

CONTENT_TYPES = ("application/x-image", "image/jpeg", "image/png")
DEFAULT_MAX_BYTES = 20 << 20
INVOCATIONS = re.compile(r"^/(?:endpoints/[a-zA-Z0-9](?:-*[a-zA-Z0-9]){0,62}/)?invocations$")


def _options(query: str, header: str | None) -> dict[str, str]:
    opts = {k: v[-1] for k, v in parse_qs(query).items()}
    for part in (header or "").split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            opts.setdefault(key.strip(), value.strip())
    return opts


class _Handler(BaseHTTPRequestHandler):
    """SageMaker's inference API: GET /ping, POST /invocations (one image, JSON out)."""

    server_version = "sdod"
    predictor: Predictor
    max_bytes: int
    lock: threading.Lock

    def _reply(self, status: int, body: dict[str, Any] | None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if urlparse(self.path).path == "/ping":
            self._reply(200, None)
        else:
            self._reply(
                404, {"error": f"no such path {self.path}; use GET /ping or POST /invocations"}
            )

    def _refusal(self, path: str) -> tuple[int, str] | None:
        """Why this request cannot be served (status, message), or None."""
        if not INVOCATIONS.match(path):
            return 404, (
                f"no such path {path}; POST images to /invocations or "
                "/endpoints/<EndpointName>/invocations"
            )
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in CONTENT_TYPES:
            return 415, f"Content-Type {ctype or '(none)'} is not one of {', '.join(CONTENT_TYPES)}"
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return 411, "Content-Length is required"
        if int(length) > self.max_bytes:
            return 413, f"request body of {length} bytes is over the limit of {self.max_bytes}"
        return None

    def do_POST(self) -> None:
        url = urlparse(self.path)
        refusal = self._refusal(url.path)
        if refusal is not None:
            self._reply(refusal[0], {"error": refusal[1]})
            return
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            opts = _options(url.query, self.headers.get("X-Amzn-SageMaker-Custom-Attributes"))
            threshold = float(opts.get("score_threshold", 0.0))
            top_k = int(opts["top_k"]) if "top_k" in opts else None
            with self.lock:
                result = self.predictor.predict(body, score_threshold=threshold, top_k=top_k)
        except (UserError, ValueError) as exc:
            self._reply(400, {"error": str(exc)})
            return
        self._reply(200, result)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"sdod serve: {self.address_string()} {format % args}\n")


def make_handler(predictor: Predictor, max_bytes: int) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to `predictor` (one prediction at a time: the model is shared)."""
    attrs = {"predictor": predictor, "max_bytes": max_bytes, "lock": threading.Lock()}
    return type("Handler", (_Handler,), attrs)


def make_server(
    predictor: Predictor, host: str, port: int, max_bytes: int = DEFAULT_MAX_BYTES
) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), make_handler(predictor, max_bytes))
