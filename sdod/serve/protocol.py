"""uvicorn's HTTP/1.1 connection (h11), bounded for clients nobody vouches for.

On top of uvicorn's `H11Protocol`:
- a deadline per request: a client that has not delivered its whole request (line,
  headers and body) `timeout` seconds after it began (after connecting, or after the
  previous answer) gets a 408 and the connection is closed; an idle keep-alive
  connection is closed quietly (uvicorn's `timeout_keep_alive` closes it sooner);
- a connection cap for the whole server (all workers, `sdod.serve.shared`): past
  `max_connections` a new connection gets a 503 with `Retry-After` at once, before
  anything is read;
- refusals as JSON `{"error": ...}` with their own status (400, 408, 414 request line too
  long, 431 headers too large, 503), where uvicorn answers text, or not at all (a blank
  request line);
- no request smuggled past a refusal: the connection closes after it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from sdod.serve.images import without_addresses
from sdod.serve.options import ServeOptions
from sdod.serve.shared import ConnectionCount

MAX_HEAD = 65536  # request line and headers together, as http.server's line limit
RETRY_AFTER_S = 1
PHRASES = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def raw_response(status: int, error: str, *, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 JSON error response that closes the connection."""
    body = json.dumps({"error": without_addresses(error)}).encode()
    head = [
        f"HTTP/1.1 {status} {PHRASES.get(status, 'Error')}",
        "server: sdod",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Connection(h11.Connection):
    """h11's connection, keeping the last parse error for the refusal to name."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.last_error = exc
            raise


class BoundedProtocol(H11Protocol):
    """uvicorn's h11 protocol with sdod's deadlines, cap and JSON refusals (one server per
    process: the options are the class's, set by `configure`)."""

    options: ServeOptions = ServeOptions()
    count: ConnectionCount = ConnectionCount()  # open connections, all workers together

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _Connection(h11.SERVER, MAX_HEAD)
        self.deadline: asyncio.TimerHandle | None = None
        self.busy = False
        self.answered = 0  # responses completed on this connection
        self.pending = False  # bytes of a request not yet complete
        self.eof = False  # the client ended its side
        self.counted = False  # this connection is in `count`
        self.stalled: asyncio.TimerHandle | None = None  # writes paused: the client reads not

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.count.try_open(self.options.max_connections):
            self._refuse_busy()
            return
        self.counted = True
        self._arm()

    def _refuse_busy(self) -> None:
        """503 at once; then read (and drop) what the client sends for a second, so that
        closing does not reset the connection before the client has read the answer."""
        self.busy = True
        self.connections.discard(self)
        error = (
            f"the server is at its {self.options.max_connections} connections; "
            f"retry in {RETRY_AFTER_S} s"
        )
        self.transport.write(raw_response(503, error, retry_after=RETRY_AFTER_S))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(1.0, self.transport.close)

    def _arm(self) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(self.options.timeout, self._expire)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self) -> None:
        """The request did not arrive in time: 408 (or, on an idle keep-alive connection
        that began no request, a quiet close)."""
        self.deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() returns a disconnect
            self.cycle.message_event.set()
        if self.pending or not self.answered:
            error = f"the request did not arrive within {self.options.timeout:g} s"
            error += "; connection closed"
            self.transport.write(raw_response(408, error))
        self.transport.close()
        # a client that does not read either: close() would wait on the write buffer forever
        self.loop.call_later(1.0, self.transport.abort)

    def pause_writing(self) -> None:
        """The client stopped reading: it has `timeout` seconds to start again."""
        super().pause_writing()
        if self.stalled is None:
            self.stalled = self.loop.call_later(self.options.timeout, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None

    def data_received(self, data: bytes) -> None:
        if self.busy:
            return
        self.pending = True
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.more_body and not self.cycle.response_complete:
            self._disarm()  # the whole request is in: the app's queue timeout bounds the rest
            self.cycle.waiting_for_100_continue = False  # the body is here already

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio allows a bool
        """The client ended its side. A request in progress is still answered (a body cut
        short is a 400 from the app), a request begun but not whole is a 400 here (h11
        would close without a word); then the connection closes."""
        self.eof = True
        if self.busy:
            return None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.more_body:  # the body ended early: the app sees its length fall short
                cycle.more_body = False
                cycle.message_event.set()
            return True  # keep the write side open for the answer
        if self.pending:
            self.send_400_response("the request ended before its headers did")
        return None

    def on_response_complete(self) -> None:
        self.answered += 1
        self.pending = bool(self.conn.trailing_data[0])
        if self.eof:
            self.transport.close()
        elif not self.transport.is_closing():
            self._arm()  # before super() runs a pipelined request, which disarms it when whole
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
        if self.counted:
            self.counted = False
            self.count.close()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """No WebSockets here: a JSON 400 (uvicorn would hand the connection over)."""
        self._disarm()
        self.transport.write(raw_response(400, "bad request: this server speaks no WebSocket"))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 cannot parse, as JSON with its own status."""
        self._disarm()
        error = getattr(self.conn, "last_error", None)  # uvicorn sets it on its h11 connection
        status = getattr(error, "error_status_hint", 400) if error is not None else 400
        reason = str(error) if error is not None and str(error) else msg
        if status == 431:
            first_line = bytes(self.conn.trailing_data[0]).split(b"\n", 1)
            if len(first_line) == 1 or len(first_line[0]) > MAX_HEAD:
                status, reason = 414, f"request line over {MAX_HEAD} bytes"
            else:
                reason = f"request line and headers over {MAX_HEAD} bytes"
        if status not in PHRASES:
            status = 400
        self.transport.write(raw_response(status, f"bad request: {reason}"))
        self.transport.close()


def configure(options: ServeOptions, count_file: str | None = None) -> type[BoundedProtocol]:
    """Set the options of this process's connections and the count of open connections
    shared with the other workers (a worker calls it when it loads the app, before uvicorn
    makes a connection); return the protocol class."""
    BoundedProtocol.options = options
    BoundedProtocol.count = ConnectionCount(count_file)
    return BoundedProtocol
