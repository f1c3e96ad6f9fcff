"""A small HTTP/1.1 server on asyncio + httptools (the parser uvicorn uses).

Why not uvicorn: a Cog server's hot path is tiny JSON requests, and on a small,
busy machine the cost per request decides both latency and throughput. Here a
response is one ``write`` (status line, headers and body together: one wake-up of
the client instead of two), requests answered without waiting (health, errors,
409s) need no task, and a sync prediction waits in its request's own task with the
connection's close as its cancel signal.

Supported: keep-alive and pipelined requests (answered in order), Content-Length and
chunked request bodies (up to ``max_body``), ``Expect: 100-continue``, streamed
(chunked) responses with write flow control, idle keep-alive timeout, graceful close.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Union
from urllib.parse import unquote

import httptools

log = logging.getLogger("cogkit.server.http")

Headers = list[tuple[bytes, bytes]]
Response = tuple[int, Headers, bytes]
HandlerResult = Union[Response, Awaitable[Union[Response, None]]]
Handler = Callable[["Request"], HandlerResult]

KEEP_ALIVE_TIMEOUT = 5.0
MAX_PIPELINED = 16

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in _REASONS.items()}


class _Clock:
    """The Date header, formatted at most once per second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._value


_clock = _Clock()


def _head(status: int, headers: Headers, extra: bytes) -> list[bytes]:
    parts = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode(), _clock.header()]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(extra)
    return parts


class Request:
    __slots__ = ("method", "path", "headers", "body", "keep_alive", "conn", "disconnected", "streamed")

    def __init__(self, method: str, path: str, headers: dict[bytes, bytes], body: bytes, keep_alive: bool, conn: Connection) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.conn = conn
        self.disconnected: asyncio.Future[None] = conn.closed
        self.streamed = False  # a streamed response has begun: no other answer is possible

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    # -- streamed responses (SSE): start, write..., end

    def stream_start(self, status: int, headers: Headers) -> None:
        self.streamed = True
        self.conn.write_raw(b"".join(_head(status, headers, b"transfer-encoding: chunked\r\n\r\n")))

    async def stream_write(self, data: bytes) -> None:
        if data:
            self.conn.write_raw(b"%x\r\n%b\r\n" % (len(data), data))
            await self.conn.drain()

    def stream_end(self) -> None:
        self.conn.write_raw(b"0\r\n\r\n")


class Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.handler = server.handler
        self.max_body = server.max_body
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = server.loop.create_future()
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._pending: deque[Request] = deque()
        self._busy = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._task: asyncio.Task[Any] | None = None
        self._too_large = False

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)
        if self._idle is not None:
            self._idle.cancel()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"Upgrades are not supported")
        except httptools.HttpParserError as exc:  # also wraps exceptions raised by our callbacks
            if self._too_large:
                self._fail(413, b"Request body is larger than %d bytes" % self.max_body)
            else:
                self._fail(400, b"Malformed HTTP request: " + str(exc).encode("latin-1", "replace"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    async def drain(self) -> None:
        if self._write_paused and not self.closed.done():
            self._drain_waiter = self.server.loop.create_future()
            await self._drain_waiter

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self._too_large = True
            raise _TooLarge()
        if self._headers.get(b"expect", b"").lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_body:
            self._too_large = True
            raise _TooLarge()
        self._body.append(body)

    def on_message_complete(self) -> None:
        path = httptools.parse_url(self._url).path.decode("latin-1")
        if "%" in path:
            path = unquote(path, encoding="utf-8", errors="replace")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(
            self.parser.get_method().decode("ascii", "replace"),
            path,
            self._headers,
            body,
            self.parser.should_keep_alive(),
            self,
        )
        self._pending.append(request)
        if len(self._pending) > MAX_PIPELINED and self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        if not self._busy:
            self._next()

    # ------------------------------------------------------------------ dispatch

    def _next(self) -> None:
        """Answer queued requests in order; stop at the first one that must wait."""
        while self._pending and not self._busy and not self.closed.done():
            request = self._pending.popleft()
            try:
                result = self.handler(request)
            except Exception:
                log.exception("error handling %s %s", request.method, request.path)
                result = (500, [(b"content-type", b"text/plain; charset=utf-8")], b"Internal Server Error")
            if isinstance(result, tuple):
                self._respond(request, result)
            else:
                self._busy = True
                self._task = self.server.loop.create_task(self._await(request, result))
                return
        if self._reading_paused and len(self._pending) <= MAX_PIPELINED // 2 and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        if not self._pending and not self._busy:
            self._arm_idle()

    async def _await(self, request: Request, pending: Awaitable[Response | None]) -> None:
        try:
            result = await pending
        except Exception:
            log.exception("error handling %s %s", request.method, request.path)
            result = (500, [(b"content-type", b"text/plain; charset=utf-8")], b"Internal Server Error")
            if request.streamed:  # too late for a 500: end the connection instead
                result = None
                request.keep_alive = False
        self._busy = False
        self._task = None
        if result is not None:
            self._respond(request, result)
        elif not request.keep_alive:
            self.close()
        self._next()

    def _respond(self, request: Request, response: Response) -> None:
        status, headers, body = response
        if log.isEnabledFor(logging.DEBUG):  # the access log (COG_LOG_LEVEL=debug)
            log.debug("%s %s %d %d", request.method, request.path, status, len(body))
        keep = request.keep_alive and not self.server.closing
        extra = b"content-length: %d\r\n%b\r\n" % (len(body), b"" if keep else b"connection: close\r\n")
        parts = _head(status, headers, extra)
        if request.method == "HEAD" or not body:
            self.write_raw(b"".join(parts))
        elif len(body) < 65536:
            parts.append(body)
            self.write_raw(b"".join(parts))
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.writelines((b"".join(parts), body))  # one writev, no copy of a big body
        if not keep:
            self.close()

    def write_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, status: int, message: bytes) -> None:
        self.write_raw(
            b"".join(_head(status, [(b"content-type", b"text/plain; charset=utf-8")], b"content-length: %d\r\nconnection: close\r\n\r\n" % len(message)))
            + message
        )
        self.close()

    def _arm_idle(self) -> None:
        if self._idle is None and not self.closed.done():
            self._idle = self.server.loop.call_later(KEEP_ALIVE_TIMEOUT, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self._idle = None
        if not self._busy and not self._pending:
            self.close()

    @property
    def idle(self) -> bool:
        return not self._busy and not self._pending

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _TooLarge(Exception):
    pass


class HttpServer:
    def __init__(self, handler: Handler, *, max_body: int) -> None:
        self.handler = handler
        self.max_body = max_body
        self.connections: set[Connection] = set()
        self.closing = False
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.base_events.Server | None = None

    async def listen(self, host: str, port: int) -> None:
        self._server = await self.loop.create_server(
            lambda: Connection(self), host=host, port=port, reuse_address=True, backlog=2048
        )

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, close idle connections, give busy ones ``timeout`` to finish."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + timeout
        while True:
            for conn in list(self.connections):
                if conn.idle:
                    conn.close()
            if not self.connections or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
