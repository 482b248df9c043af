"""The endpoint as an ASGI application: SageMaker's inference API, the Open Inference
Protocol (v2) and Prometheus metrics, over one dynamically batched model.

SageMaker (boto3's `sagemaker-runtime` `invoke_endpoint` and the SageMaker SDK's
`Predictor` work unchanged against `endpoint_url=http://host:port`; their SigV4 signature
is not checked: put the server behind your own authentication when others can reach it):
- `GET /ping`; `POST /invocations` and `POST /endpoints/<EndpointName>/invocations`: the
  image bytes (`Content-Type` `application/x-image`, `image/jpeg` or `image/png`), options
  `score_threshold` and `top_k` as query parameters or in
  `X-Amzn-SageMaker-Custom-Attributes`; `Accept` JSON (or absent). Answer: the prediction
  JSON. `tile_size` (with `tile_overlap`, `tile_whole`) predicts a large image tile by tile
  (`sdod.serve.slicing`).

Open Inference Protocol v2 (`sdod.serve.oip`): `GET /v2`, `/v2/health/live`,
`/v2/health/ready`, `/v2/models/<name>[/versions/<v>]`, `.../ready`; `POST .../infer`.

`GET /metrics`: Prometheus text (`sdod.serve.metrics`).

Errors are JSON `{"error": "..."}` and close the connection: 400, 404, 405 (with
`Allow`), 406, 408, 411, 413 (body or image pixels), 414, 415, 431, 500 (a bug; details
only in the server's log), 503 (queue full or waited too long, with `Retry-After`).
Images decode on a pool of `decoders` threads, never on the model's thread.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from sdod import __version__
from sdod.errors import DataError, UserError
from sdod.serve import oip
from sdod.serve.batching import Batcher, Busy
from sdod.serve.images import without_addresses
from sdod.serve.metrics import Metrics
from sdod.serve.options import DIGITS, ServeOptions, parse_request
from sdod.serve.predictor import Predictor
from sdod.serve.protocol import MAX_HEAD, RETRY_AFTER_S
from sdod.serve.slicing import Slicing

log = logging.getLogger("sdod.serve")
CONTENT_TYPES = ("application/x-image", "image/jpeg", "image/png")
ACCEPTED = ("", "*/*", "application/*", "application/json")
IMAGE_STATUS = {"image_format": 415, "image_pixels": 413, "image_tiles": 413}
MAX_HEADERS = 100  # as http.server
MAX_TILES = 256  # tiles of one image a request may ask for (each is a model input)
NAME = r"[a-zA-Z0-9](?:-*[a-zA-Z0-9]){0,62}"
MODEL = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"


class Refused(Exception):
    """A request refused with `status` and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}


class Exchange:
    """One request and its answer."""

    def __init__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        self.status = 0
        self.route = "other"  # for the metrics
        self.headers: dict[str, list[str]] = {}
        for name, value in scope["headers"]:
            self.headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[-1] if values else None

    async def reply(
        self, status: int, body: bytes | dict | None, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body or b""
        extra = {"content-type": "application/json", **(headers or {})}
        if status >= 400:
            extra["connection"] = "close"
        length = 0 if self.scope["method"] == "HEAD" else len(data)
        head = [(b"content-length", str(length).encode())]
        head += [(k.encode(), v.encode()) for k, v in extra.items()]
        self.status = status
        await self.send({"type": "http.response.start", "status": status, "headers": head})
        await self.send({"type": "http.response.body", "body": data})

    async def body(self, limit: int) -> bytes | None:
        """The whole body, checked against `Content-Length` and `limit`; None when the
        client went away (or the protocol answered its timeout)."""
        if "transfer-encoding" in self.headers:
            raise Refused(411, "Transfer-Encoding is not accepted; send Content-Length")
        values = {v.strip() for v in self.headers.get("content-length", [])}
        if not values:
            raise Refused(411, "Content-Length is required")
        value = values.pop()
        if values or not DIGITS.fullmatch(value):
            raise Refused(400, "Content-Length must be one decimal number of bytes")
        if len(value) > 18 or int(value) > limit:
            raise Refused(413, f"request body of {value} bytes is over the limit of {limit}")
        length, chunks, got = int(value), [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            got += len(chunks[-1])
            if not message.get("more_body"):
                break
        if got < length:
            raise Refused(400, f"the body ended after {got} of {length} bytes")
        return b"".join(chunks)


Handler = Callable[[Exchange, dict[str, str]], Awaitable[None]]


class Endpoint:
    """The ASGI application over one `Predictor` (start and stop come through the ASGI
    lifespan: uvicorn sends them)."""

    def __init__(
        self,
        predictor: Predictor,
        options: ServeOptions,
        name: str = "model",
        platform: str = "pytorch",
    ) -> None:
        self.predictor, self.options, self.name, self.platform = predictor, options, name, platform
        self.metrics = Metrics()
        self.batcher = Batcher(predictor, options, self.metrics.batch, self.metrics.queue.set)
        self.decoders = ThreadPoolExecutor(options.decoders, thread_name_prefix="sdod-decode")
        self.ready = False
        self.in_flight = 0  # image requests being read, decoded or waiting for the model
        get, post = "GET", "POST"
        table: list[tuple[str, str, dict[str, Handler]]] = [
            (r"/ping", "ping", {get: self._ping}),
            (rf"/(?:endpoints/{NAME}/)?invocations", "invocations", {post: self._invocations}),
            (r"/v2", "metadata", {get: self._server_metadata}),
            (r"/v2/health/(?P<probe>live|ready)", "health", {get: self._health}),
            (MODEL, "metadata", {get: self._model_metadata}),
            (MODEL + "/ready", "health", {get: self._model_ready}),
            (MODEL + "/infer", "infer", {post: self._infer}),
            (r"/metrics", "metrics", {get: self._metrics}),
        ]
        self.routes = [(re.compile(p), route, methods) for p, route, methods in table]

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(Exchange(scope, receive, send))
        # nothing else is spoken here (uvicorn is started with WebSockets off)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.batcher.start()
                self.ready = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.ready = False
                await self.batcher.stop()
                self.decoders.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, exchange: Exchange) -> None:
        started = time.monotonic()
        try:
            await self._dispatch(exchange)
        except Refused as exc:
            await exchange.reply(exc.status, {"error": without_addresses(str(exc))}, exc.headers)
        except Exception:  # a bug: logged with its traceback, the client told no details
            log.exception("sdod serve: internal error on %s", exchange.scope["path"][:200])
            if exchange.status == 0:
                error = "internal error; the server's log has the details"
                await exchange.reply(500, {"error": error})
        finally:
            status = str(exchange.status or 499)  # 499: the client went away unanswered
            self.metrics.requests.labels(exchange.route, status).inc()
            self.metrics.latency.labels(exchange.route).observe(time.monotonic() - started)

    async def _dispatch(self, exchange: Exchange) -> None:
        scope = exchange.scope
        if scope["http_version"] not in ("1.0", "1.1"):
            raise Refused(400, f"HTTP/{scope['http_version']}: speak HTTP/1.0 or HTTP/1.1")
        # h11 bounds a head still arriving; one that arrived whole is bounded here
        if len(scope["raw_path"]) + len(scope["query_string"]) > MAX_HEAD:
            raise Refused(414, f"request target over {MAX_HEAD} bytes")
        if len(scope["headers"]) > MAX_HEADERS:
            raise Refused(431, f"more than {MAX_HEADERS} header lines")
        if sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > MAX_HEAD:
            raise Refused(431, f"headers over {MAX_HEAD} bytes")
        path = scope["path"]
        for pattern, route, methods in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            exchange.route = route
            handler = methods.get(scope["method"])
            if handler is None:
                allow = ", ".join(methods)
                raise Refused(405, f"{path[:200]} takes {allow}", {"allow": allow})
            await handler(exchange, match.groupdict())
            return
        raise Refused(404, f"no such path {path[:200]}; POST images to /invocations")

    @property
    def serving(self) -> bool:
        """Started, not stopping, and the batcher alive."""
        return self.ready and self.batcher.alive

    async def _ping(self, exchange: Exchange, _: dict[str, str]) -> None:
        await exchange.reply(200 if self.serving else 503, None)

    async def _prepare(self, data: bytes, where: str, slicing: Slicing | None = None) -> Any:
        """The image decoded for the model on a decoder thread (its tiles, with `slicing`)."""
        loop = asyncio.get_running_loop()
        try:
            if slicing is not None:
                prepare = functools.partial(self.predictor.prepare_tiles, max_tiles=MAX_TILES)
                return await loop.run_in_executor(self.decoders, prepare, data, slicing, where)
            return await loop.run_in_executor(self.decoders, self.predictor.prepare, data, where)
        except DataError as exc:
            raise Refused(IMAGE_STATUS.get(exc.rule or "", 400), str(exc)) from None
        except UserError as exc:
            raise Refused(400, str(exc)) from None

    async def _predict(self, image: torch.Tensor, threshold: float, top_k: int | None) -> Any:
        try:
            answer = await self.batcher.submit(image, threshold, top_k)
        except Busy as exc:
            self.metrics.images.labels("busy").inc()
            message = f"{exc}; retry in {RETRY_AFTER_S} s"
            raise Refused(503, message, {"retry-after": str(RETRY_AFTER_S)}) from None
        except Exception:
            self.metrics.images.labels("failed").inc()
            raise
        self.metrics.images.labels("predicted").inc()
        return answer

    def _admit(self) -> None:
        """Count one more image request in this worker, or refuse it (503) when as many as
        `max_queue` are already being read, decoded or waiting: the connection cap alone
        does not bound work whose client has gone (the body is still decoded)."""
        if self.in_flight >= self.options.max_queue:
            error = f"{self.in_flight} requests are already in progress; retry in {RETRY_AFTER_S} s"
            raise Refused(503, error, {"retry-after": str(RETRY_AFTER_S)})
        self.in_flight += 1

    async def _invocations(self, exchange: Exchange, _: dict[str, str]) -> None:
        self._admit()
        try:
            await self._invoke(exchange)
        finally:
            self.in_flight -= 1

    async def _invoke(self, exchange: Exchange) -> None:
        accept = exchange.header("accept") or ""
        if not any(r.split(";")[0].strip().lower() in ACCEPTED for r in accept.split(",")):
            raise Refused(406, f"Accept {accept[:100]}: the answer is application/json")
        body = await exchange.body(self.options.max_request_bytes)
        if body is None:
            return
        ctype = (exchange.header("content-type") or "").split(";")[0].strip().lower()
        if ctype not in CONTENT_TYPES:
            allowed = ", ".join(CONTENT_TYPES)
            raise Refused(415, f"Content-Type {ctype or '(none)'} is not one of {allowed}")
        query = exchange.scope["query_string"].decode("latin-1")
        try:
            attributes = exchange.header("x-amzn-sagemaker-custom-attributes")
            threshold, top_k, slicing = parse_request(query, attributes)
        except UserError as exc:
            raise Refused(400, str(exc)) from None
        if slicing is not None:
            answer = await self._predict_sliced(body, slicing, threshold, top_k)
        else:
            image = await self._prepare(body, "request body")
            answer = await self._predict(image, threshold, top_k)
        await exchange.reply(200, answer)

    async def _predict_sliced(
        self, body: bytes, slicing: Slicing, threshold: float, top_k: int | None
    ) -> Any:
        """A large image tile by tile: its tiles join the batches `max_batch` at a time (so
        one image never fills the queue), then merge (`sdod.serve.slicing`)."""
        found, batch, size = await self._prepare(body, "request body", slicing)
        answers: list[Any] = []
        step = self.options.max_batch
        for start in range(0, len(batch), step):
            wave = [
                self._predict(batch[i : i + 1], 0.0, None)
                for i in range(start, min(start + step, len(batch)))
            ]
            answers += await asyncio.gather(*wave)
        merge = functools.partial(
            self.predictor.merge_tiles, score_threshold=threshold, top_k=top_k
        )  # in the decoders' pool: joining many tiles' boxes must not stall the event loop
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.decoders, merge, answers, found, size, slicing)

    def _check_model(self, params: dict[str, str]) -> None:
        if params["model"] != self.name:
            asked = params["model"][:100]
            raise Refused(404, f"no model {asked!r}; this server serves {self.name!r}")
        if params.get("version") not in (None, "1"):
            raise Refused(404, f"model {self.name!r} has version 1 only")

    async def _server_metadata(self, exchange: Exchange, _: dict[str, str]) -> None:
        extensions = ["binary_tensor_data"]
        await exchange.reply(
            200, {"name": "sdod", "version": __version__, "extensions": extensions}
        )

    async def _health(self, exchange: Exchange, params: dict[str, str]) -> None:
        ok = params["probe"] == "live" or self.serving
        await exchange.reply(200 if ok else 503, {params["probe"]: ok})

    async def _model_metadata(self, exchange: Exchange, params: dict[str, str]) -> None:
        self._check_model(params)
        await exchange.reply(200, oip.model_metadata(self.name, self.platform))

    async def _model_ready(self, exchange: Exchange, params: dict[str, str]) -> None:
        self._check_model(params)
        ready = self.serving
        await exchange.reply(200 if ready else 503, {"name": self.name, "ready": ready})

    async def _infer(self, exchange: Exchange, params: dict[str, str]) -> None:
        self._check_model(params)
        self._admit()
        try:
            await self._infer_admitted(exchange)
        finally:
            self.in_flight -= 1

    async def _infer_admitted(self, exchange: Exchange) -> None:
        body = await exchange.body(self.options.max_request_bytes)
        if body is None:
            return
        try:
            request = oip.parse_infer(body, exchange.header(oip.HEADER))
        except UserError as exc:
            raise Refused(400, str(exc)) from None
        images = [self._prepare(data, f"inputs[0][{i}]") for i, data in enumerate(request.images)]
        prepared = await asyncio.gather(*images)
        options = (request.score_threshold, request.top_k)
        answers = await asyncio.gather(*(self._predict(image, *options) for image in prepared))
        data, headers = oip.infer_response(self.name, request, [a["prediction"] for a in answers])
        await exchange.reply(200, data, headers)

    async def _metrics(self, exchange: Exchange, _: dict[str, str]) -> None:
        text, ctype = self.metrics.render()
        await exchange.reply(200, text, {"content-type": ctype})
