"""The SageMaker inference-container contract over HTTP: `GET /ping`, `POST /invocations`,
and the runtime API's `POST /endpoints/{EndpointName}/invocations`, so boto3's
`sagemaker-runtime` `invoke_endpoint` and the SageMaker SDK's `Predictor` work unchanged
against `endpoint_url=http://host:port` (their SigV4 signature is not checked: put the
server behind your own authentication when it is reachable by others).

Request: the image bytes with `Content-Type` `application/x-image`, `image/jpeg` or
`image/png`. Optional `score_threshold` and `top_k`, as query parameters or in SageMaker's
`X-Amzn-SageMaker-Custom-Attributes` header (`score_threshold=0.5,top_k=10`; other keys
are ignored). Response: the prediction JSON. Errors are JSON `{"error": "..."}`: 400 (bad
request line, header, option or image), 404, 405, 408 (request not in within `timeout`),
411, 413 (body or image pixels too large), 414, 415 (content type, or not JPEG/PNG), 431
(headers too large), 503 (over `max_connections`; `Retry-After`).

A client cannot hold a connection past `timeout` seconds without delivering its whole
request (one deadline per connection, checked twice a second, and a timeout on each read
and write), open more than `max_connections` at once, make the server decode more than
the pixel budget (`sdod.serve.images`), or decode while the model runs: images decode in
the connection's thread, `decoders` at a time; only the forward pass holds the model's
lock. One request per connection (HTTP/1.0 replies, `Connection: close`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from sdod.errors import DataError, UserError
from sdod.serve.images import without_addresses
from sdod.serve.predictor import Predictor

CONTENT_TYPES = ("application/x-image", "image/jpeg", "image/png")
DEFAULT_MAX_BYTES = 20 << 20
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 32
INVOCATIONS = re.compile(r"^/(?:endpoints/[a-zA-Z0-9](?:-*[a-zA-Z0-9]){0,62}/)?invocations$")
MAX_LINE = 65536  # request line, as http.server
MAX_ATTRIBUTES = 1024  # SageMaker's limit on CustomAttributes
DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() takes "²" and int() "١"
NUMBER = re.compile(r"(?:[0-9]{1,10}(?:\.[0-9]{0,10})?|\.[0-9]{1,10})(?:[eE][-+]?[0-9]{1,3})?")
IMAGE_STATUS = {"image_format": 415, "image_pixels": 413}
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Limits:
    """What one client may take: body bytes, seconds to deliver its request, connections
    open at once (all clients), images decoding at once."""

    max_request_bytes: int = DEFAULT_MAX_BYTES
    timeout: float = DEFAULT_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    decoders: int = max(2, os.cpu_count() or 2)

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "timeout", "max_connections", "decoders"):
            if not 0 < getattr(self, name) < math.inf:
                flag = "--" + name.replace("_", "-")
                raise UserError(f"{flag} must be a positive number, got {getattr(self, name)}")


def _number(key: str, value: str, where: str) -> float:
    if not NUMBER.fullmatch(value):
        raise UserError(f"{where}: {key}={value!r} is not a decimal number; e.g. {key}=0.5")
    return float(value)


def parse_options(query: str, attributes: str | None) -> tuple[float, int | None]:
    """`(score_threshold, top_k)` from the query string and the custom-attributes header
    (the query wins); unknown keys are ignored, a malformed known one is a UserError."""
    header = "X-Amzn-SageMaker-Custom-Attributes"
    try:
        opts = {k: (v[-1], "query") for k, v in parse_qs(query, max_num_fields=32).items()}
    except ValueError as exc:
        raise UserError(f"query string: {exc}") from None
    text = attributes or ""
    if len(text) > MAX_ATTRIBUTES or not text.isascii() or not text.isprintable():
        raise UserError(f"{header}: at most {MAX_ATTRIBUTES} printable ASCII characters")
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UserError(
                f"{header}: {part!r} is not key=value; e.g. score_threshold=0.5,top_k=3"
            )
        opts.setdefault(key.strip(), (value.strip(), header))
    threshold = 0.0
    if "score_threshold" in opts:
        value, where = opts["score_threshold"]
        threshold = _number("score_threshold", value, where)
        if not 0.0 <= threshold <= 1.0:
            raise UserError(f"{where}: score_threshold must be in [0, 1], got {value}")
    top_k = None
    if "top_k" in opts:
        value, where = opts["top_k"]
        if not DIGITS.fullmatch(value) or len(value) > 9 or int(value) < 1:
            raise UserError(f"{where}: top_k must be a positive integer, got {value!r}")
        top_k = int(value)
    return threshold, top_k


class _Handler(BaseHTTPRequestHandler):
    """SageMaker's inference API: GET /ping, POST /invocations (one image, JSON out)."""

    server_version = "sdod"
    default_request_version = "HTTP/1.0"  # a status line even for a malformed request
    predictor: Predictor
    limits: Limits
    lock: threading.Lock  # the model: one forward pass at a time
    decoders: threading.BoundedSemaphore
    server: _Server
    timed_out = False
    replied = False

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self.server.watch(self, time.monotonic() + self.limits.timeout)

    def finish(self) -> None:
        self.server.forget(self)
        super().finish()

    def expire(self) -> None:
        """Past the deadline: stop reading (a blocked read returns) and answer 408."""
        self.timed_out = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RD)

    def _reply(self, status: int, body: dict[str, Any] | None, allow: str | None = None) -> None:
        if isinstance(body, dict) and "error" in body:
            body = {"error": without_addresses(str(body["error"]))}
        data = b"" if body is None else json.dumps(body).encode()
        self.replied = True
        self.request_version = "HTTP/1.0"  # http.server writes no status line for HTTP/0.9
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        if allow is not None:
            self.send_header("Allow", allow)
        self.end_headers()
        self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals, as JSON (and 505 as 400: a request, not the server)."""
        if code == 505:
            code, message = 400, f"{message}; speak HTTP/1.0 or HTTP/1.1"
        self._reply(code, {"error": message or self.responses[code][0]})

    def handle_one_request(self) -> None:
        self.close_connection = True
        self.requestline, self.command = "", ""
        self.request_version = self.default_request_version
        try:
            self._serve_one()
        except TimeoutError:
            self.timed_out = True
        if self.timed_out and not self.replied:
            self.server.forget(self)
            error = (
                f"the request did not arrive within {self.limits.timeout:g} s; connection closed"
            )
            self._reply(408, {"error": error})

    def _serve_one(self) -> None:
        self.raw_requestline = self.rfile.readline(MAX_LINE + 1)
        if self.timed_out or not self.raw_requestline:
            return
        if len(self.raw_requestline) > MAX_LINE:
            self._reply(414, {"error": f"request line over {MAX_LINE} bytes"})
            return
        if not self.raw_requestline.strip():
            self._reply(400, {"error": "empty request line; send e.g. 'GET /ping HTTP/1.1'"})
            return
        if not self.parse_request() or self.timed_out:
            return
        if self.command != "POST":
            self.server.forget(self)  # the request is all here; a POST still owes its body
        route = {"GET": self.do_GET, "POST": self.do_POST}.get(self.command or "")
        if route is None:
            error = f"method {self.command} is not allowed; use GET or POST"
            self._reply(405, {"error": error}, allow="GET, POST")
            return
        route()
        self.wfile.flush()

    def _target(self) -> tuple[str, str]:
        path, _, query = self.path.partition("#")[0].partition("?")
        return path, query

    def do_GET(self) -> None:
        path, _ = self._target()
        if path == "/ping":
            self._reply(200, None)
        elif INVOCATIONS.match(path):
            self._reply(405, {"error": f"{path} takes POST"}, allow="POST")
        else:
            self._reply(404, {"error": f"no such path {path}; use GET /ping or POST /invocations"})

    def _content_length(self) -> int | None:
        """The body's length, or None once a refusal is sent."""
        if "Transfer-Encoding" in self.headers:
            self._reply(411, {"error": "Transfer-Encoding is not accepted; send Content-Length"})
            return None
        values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not values:
            self._reply(411, {"error": "Content-Length is required"})
            return None
        value = values.pop()
        if values or not DIGITS.fullmatch(value):
            self._reply(400, {"error": "Content-Length must be one decimal number of bytes"})
            return None
        if len(value) > 18 or int(value) > self.limits.max_request_bytes:
            limit = self.limits.max_request_bytes
            error = f"request body of {value} bytes is over the limit of {limit}"
            self._reply(413, {"error": error})
            return None
        return int(value)

    def _read_body(self, length: int) -> bytes | None:
        """The whole body, or None once a refusal is sent (or the deadline passed)."""
        body = self.rfile.read(length)
        if self.timed_out:
            return None
        self.server.forget(self)
        if len(body) < length:
            self._reply(400, {"error": f"the body ended after {len(body)} of {length} bytes"})
            return None
        return body

    def do_POST(self) -> None:
        path, query = self._target()
        if path == "/ping":
            self._reply(405, {"error": "/ping takes GET"}, allow="GET")
            return
        if not INVOCATIONS.match(path):
            where = "/invocations or /endpoints/<EndpointName>/invocations"
            self._reply(404, {"error": f"no such path {path}; POST images to {where}"})
            return
        length = self._content_length()
        if length is None:
            return
        body = self._read_body(length)
        if body is None:
            return
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in CONTENT_TYPES:
            error = f"Content-Type {ctype or '(none)'} is not one of {', '.join(CONTENT_TYPES)}"
            self._reply(415, {"error": error})
            return
        try:
            options = parse_options(query, self.headers.get("X-Amzn-SageMaker-Custom-Attributes"))
        except UserError as exc:
            self._reply(400, {"error": str(exc)})
            return
        self._invoke(body, *options)

    def _invoke(self, body: bytes, threshold: float, top_k: int | None) -> None:
        try:
            with self.decoders:  # bounded: each decode may take up to the pixel budget
                batch = self.predictor.prepare(body)
            with self.lock:
                result = self.predictor.forward(batch, score_threshold=threshold, top_k=top_k)
        except DataError as exc:
            self._reply(IMAGE_STATUS.get(exc.rule or "", 400), {"error": str(exc)})
            return
        except UserError as exc:
            self._reply(400, {"error": str(exc)})
            return
        except Exception:  # a bug: logged with its traceback, the client told no details
            self.log_error("%s", traceback.format_exc())
            self._reply(500, {"error": "internal error; the server's log has the details"})
            return
        self._reply(200, result)

    def log_message(self, format: str, *args: Any) -> None:
        message = ascii(format % args)[1:-1]  # the client's text, control characters escaped
        sys.stderr.write(f"sdod serve: {self.address_string()} {message}\n")


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most `limits.max_connections` of them; past that, a
    503 with Retry-After from a short-lived thread (or a plain close in a flood)."""

    request_queue_size = 128
    limits: Limits

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        super().__init__(address, handler)
        self.limits = handler.limits
        self.slots = threading.BoundedSemaphore(self.limits.max_connections)
        self.overflow = threading.BoundedSemaphore(self.limits.max_connections)
        self.deadlines: dict[_Handler, float] = {}
        self.deadlines_lock = threading.Lock()

    def watch(self, handler: _Handler, deadline: float) -> None:
        with self.deadlines_lock:
            self.deadlines[handler] = deadline

    def forget(self, handler: _Handler) -> None:
        with self.deadlines_lock:
            self.deadlines.pop(handler, None)

    def service_actions(self) -> None:
        """Between accepts (every poll interval, 0.5 s): expire connections past deadline."""
        now = time.monotonic()
        with self.deadlines_lock:
            late = [h for h, due in self.deadlines.items() if due <= now]
            for handler in late:
                del self.deadlines[handler]
        for handler in late:
            handler.expire()

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.slots.acquire(blocking=False):
            try:
                super().process_request(request, client_address)
            except BaseException:
                self.slots.release()
                raise
        elif self.overflow.acquire(blocking=False):
            threading.Thread(target=self._busy, args=(request,), daemon=True).start()
        else:
            self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.slots.release()  # before the close: a client that saw it may come again
            self.shutdown_request(request)

    def _busy(self, request: socket.socket) -> None:
        """503 at once, then read what the client sends for a second so that closing does
        not reset the connection before the client has read the answer."""
        busy = f"the server is at its {self.limits.max_connections} connections"
        body = json.dumps({"error": f"{busy}; retry in {RETRY_AFTER_S} s"}).encode()
        head = (
            "HTTP/1.0 503 Service Unavailable\r\nServer: sdod\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Retry-After: {RETRY_AFTER_S}\r\nConnection: close\r\n\r\n"
        )
        try:
            request.settimeout(1.0)
            request.sendall(head.encode() + body)
            request.shutdown(socket.SHUT_WR)
            ends = time.monotonic() + 1.0
            while time.monotonic() < ends and request.recv(65536):
                pass
        except OSError:
            pass
        finally:
            request.close()
            self.overflow.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is one line in the log; anything else its traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            sys.stderr.write(f"sdod serve: {client_address[0]} connection lost ({exc})\n")
        else:
            super().handle_error(request, client_address)


def make_handler(predictor: Predictor, limits: Limits) -> type[_Handler]:
    """A handler class bound to `predictor` (one forward pass at a time: the model is shared)."""
    attrs = {
        "predictor": predictor,
        "limits": limits,
        "timeout": limits.timeout,  # each read and write on the connection
        "lock": threading.Lock(),
        "decoders": threading.BoundedSemaphore(limits.decoders),
    }
    return type("Handler", (_Handler,), attrs)


def make_server(
    predictor: Predictor, host: str, port: int, limits: Limits | None = None
) -> ThreadingHTTPServer:
    """A server on `host:port` (0: any free port); run it with `serve_forever()` (which
    also enforces the deadlines)."""
    return _Server((host, port), make_handler(predictor, limits or Limits()))
