"""A small HTTP/1.1 server on asyncio + httptools (the parser uvicorn uses).

Why not uvicorn: a Cog server's hot path is tiny JSON requests, and on a small,
busy machine the cost per request decides both latency and throughput. Here a
response is one ``write`` (status line, headers and body together: one wake-up of
the client instead of two), requests answered without waiting (health, errors,
409s) need no task, and a sync prediction waits in its request's own task with the
connection's close as its cancel signal.

Supported: keep-alive and pipelined requests (answered in order), Content-Length and
chunked request bodies (up to ``max_body``), ``Expect: 100-continue``, streamed
(chunked) responses with write flow control, graceful close.

Defences (``Limits``): llhttp itself rejects ambiguous framing (Content-Length with
Transfer-Encoding, duplicate or malformed Content-Length, bad chunk sizes) with a 400;
the request line and headers are capped (414/431); a request must arrive in time
(headers within ``head_timeout``, no body silence longer than ``body_timeout``: 408),
an idle keep-alive connection is closed after ``keep_alive_timeout``, and a client that
leaves responses unread for ``write_timeout`` is dropped. Requests stop being read
while 16 are waiting for an answer or while written answers are not taken, so neither
requests nor responses pile up in memory. Connections beyond ``max_connections`` are
answered 503 and closed. An answer to a request that cannot be read (400/408/413/...)
is written after the answers to the requests before it, then the connection closes:
never two answers to one request, never one out of order.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import resource
import socket
import struct
import termios
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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

MAX_PIPELINED = 16  # requests waiting for their answer before reading pauses


def _default_max_connections() -> int:
    # Leave half of the descriptors to everything else the server opens: webhook and
    # upload sockets, input files, the worker's pipes.
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(32, min(4096, soft // 2))


@dataclass(frozen=True)
class Limits:
    max_body: int = 100 * 1024 * 1024  # coglet's limit
    max_head: int = 64 * 1024  # request line + headers, bytes
    max_headers: int = 100
    keep_alive_timeout: float = 5.0  # idle between requests
    head_timeout: float = 30.0  # from a request's first byte to the end of its headers
    body_timeout: float = 30.0  # longest silence while a body is arriving
    write_timeout: float = 30.0  # longest time a client may take none of our buffered output
    max_connections: int = field(default_factory=_default_max_connections)


_REASONS = {s.value: s.phrase for s in HTTPStatus}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in _REASONS.items()}
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_OUTQ = getattr(termios, "TIOCOUTQ", None)  # on a TCP socket: bytes the peer has not acknowledged

# What a connection is reading (see Connection._on_timer).
_BETWEEN, _HEAD, _BODY = 0, 1, 2


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


def _closing_response(status: int, message: bytes) -> bytes:
    extra = b"content-length: %d\r\nconnection: close\r\n\r\n" % len(message)
    return b"".join(_head(status, _TEXT, extra)) + message


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


class _Reject(Exception):
    """Raised from a parser callback: answer ``status`` with ``message`` and close."""

    def __init__(self, status: int, message: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.message = message


class Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.handler = server.handler
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = server.loop.create_future()
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._head_size = 0
        self._body: list[bytes] = []
        self._size = 0
        self._pending: deque[Request] = deque()
        self._busy = False
        self._task: asyncio.Task[Any] | None = None
        # reading
        self._reading = _BETWEEN
        self._read_mark = 0.0  # when the head began, or the body last made progress
        self._size_seen = 0  # body bytes at _read_mark
        self._reading_paused = False
        self._done_reading = False  # no further request is read (refused, or an upgrade)
        self._refusal: bytes | None = None  # the closing answer owed once earlier ones are out
        self._continue_owed = False  # 100 Continue for the request being read, once it is next
        # timers: one for reading/idle, one for unread output
        self._idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._write_left = 0
        self._write_resumed = False

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.server.connections) >= self.limits.max_connections:
            self.server.note_refused_connection()
            self._done_reading = True
            self.transport.write(_closing_response(503, b"Too many open connections"))  # type: ignore[union-attr]
            self.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.server.connections.add(self)
        self._became_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)
        for timer in (self._timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._write_timer = None
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        if self._done_reading:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade (websocket, h2c) or CONNECT request. Switching protocols is
            # optional for a server: it is answered as a plain request (with
            # ``connection: close``, see on_message_complete); what follows it on the
            # wire belongs to the other protocol and is never parsed as HTTP/1.1.
            self._stop_reading()
        except httptools.HttpParserError as exc:  # also wraps exceptions raised by our callbacks
            reject = exc.__context__
            if isinstance(reject, _Reject):
                self._refuse(reject.status, reject.message)
            else:
                self._refuse(400, b"Malformed HTTP request: " + str(exc).encode("latin-1", "replace"))

    def pause_writing(self) -> None:
        self._write_paused = True
        self._watch_writes()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._write_resumed = True
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if self._pending and not self._busy:
            self._next()

    async def drain(self) -> None:
        if self._write_paused and not self.closed.done():
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._head_size = 0
        self._body = []
        self._size = 0
        self._reading = _HEAD
        self._read_mark = self.loop.time()
        self._arm(self._read_mark + self.limits.head_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self.limits.max_head:
            raise _Reject(414, b"Request target is longer than %d bytes" % self.limits.max_head)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.limits.max_head:
            raise _Reject(431, b"Request headers are larger than %d bytes" % self.limits.max_head)
        if len(self._headers) > self.limits.max_headers:
            raise _Reject(431, b"More than %d request headers" % self.limits.max_headers)

    def on_headers_complete(self) -> None:
        self._reading = _BODY
        self._read_mark = self.loop.time()
        self._size_seen = 0
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body:
            raise _Reject(413, b"Request body is larger than %d bytes" % self.limits.max_body)
        if self._headers.get(b"expect", b"").lower() == b"100-continue":
            if self.idle:
                self.write_raw(_CONTINUE)
            else:  # an interim answer must not overtake the answers to earlier requests
                self._continue_owed = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.limits.max_body:
            raise _Reject(413, b"Request body is larger than %d bytes" % self.limits.max_body)
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._reading = _BETWEEN
        self._continue_owed = False
        try:
            path = (httptools.parse_url(self._url).path or b"/").decode("latin-1")  # "http://host" has none
        except httptools.HttpParserInvalidURLError:
            raise _Reject(400, b"Invalid request target") from None
        if "%" in path:
            path = unquote(path, encoding="utf-8", errors="replace")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        parser = self.parser
        request = Request(
            parser.get_method().decode("ascii", "replace"),
            path,
            self._headers,
            body,
            parser.should_keep_alive() and not parser.should_upgrade(),
            self,
        )
        self._pending.append(request)
        if len(self._pending) > MAX_PIPELINED:
            self._pause_reading()
        if not self._busy:
            self._next()

    # ------------------------------------------------------------------ dispatch

    @property
    def idle(self) -> bool:
        return not self._busy and not self._pending

    def _next(self) -> None:
        """Answer queued requests in order; stop at the first one that must wait, or
        while the client has not taken the answers already written."""
        while self._pending and not self._busy and not self._write_paused and not self._closing:
            request = self._pending.popleft()
            try:
                result = self.handler(request)
            except Exception:
                log.exception("error handling %s %s", request.method, request.path)
                result = (500, _TEXT, b"Internal Server Error")
            if isinstance(result, tuple):
                self._respond(request, result)
            else:
                self._busy = True
                self._task = self.loop.create_task(self._await(request, result))
                return
        if self._reading_paused and len(self._pending) <= MAX_PIPELINED // 2 and not self._done_reading:
            self._resume_reading()
        if self.idle:
            self._became_idle()

    async def _await(self, request: Request, pending: Awaitable[Response | None]) -> None:
        try:
            result = await pending
        except Exception:
            log.exception("error handling %s %s", request.method, request.path)
            result = (500, _TEXT, b"Internal Server Error")
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
        elif not self._closing:
            self.transport.writelines((b"".join(parts), body))  # type: ignore[union-attr]  # one writev, no copy of a big body
        if not keep:
            self.close()

    def _became_idle(self) -> None:
        if self._refusal is not None:
            self.write_raw(self._refusal)
            self.close()
            return
        if self._continue_owed:
            self._continue_owed = False
            self.write_raw(_CONTINUE)
            self._read_mark = self.loop.time()  # the body's wait starts now
        self._idle_since = self.loop.time()
        self._arm(self._idle_since + self.limits.keep_alive_timeout)

    # ------------------------------------------------------------------ reading control

    def _refuse(self, status: int, message: bytes) -> None:
        """A request that cannot be read: answer it after the earlier requests' answers,
        then close. Nothing more is read from this connection."""
        if self._refusal is None:
            log.debug("refusing a request: %d %s", status, message.decode("latin-1"))
            self._refusal = _closing_response(status, message)
            self._stop_reading()
        if self.idle:
            self._became_idle()

    def _stop_reading(self) -> None:
        self._done_reading = True
        self._reading = _BETWEEN
        self._continue_owed = False
        self._pause_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and not self._closing:
            self._reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._closing:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
            # time spent paused by us does not count against the client
            self._read_mark = self.loop.time()
            self._size_seen = self._size
            self._arm(self._read_mark + self.limits.keep_alive_timeout)

    # ------------------------------------------------------------------ timeouts

    def _arm(self, when: float) -> None:
        """Make sure the timer fires no later than ``when`` (it may fire earlier: _on_timer
        then works out the current deadline and re-arms)."""
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closing:
            return
        now = self.loop.time()
        limits = self.limits
        if self._reading_paused or self._continue_owed:  # we hold the client back: no read deadline
            return
        if self._reading == _HEAD:
            deadline = self._read_mark + limits.head_timeout
        elif self._reading == _BODY:
            if self._size != self._size_seen:  # the body made progress since the last look
                self._size_seen = self._size
                self._read_mark = now
            deadline = self._read_mark + limits.body_timeout
        elif self.idle:
            deadline = self._idle_since + limits.keep_alive_timeout
        else:
            return  # a handler is working: it ends with _became_idle, which re-arms
        if now < deadline:
            self._arm(deadline)
        elif self._reading == _BETWEEN:
            self.close()  # idle keep-alive connection
        else:
            self._refuse(408, b"The request was not received in time")

    def _watch_writes(self) -> None:
        """Drop the connection if the client takes none of our output for ``write_timeout``
        (a client that never reads must not hold memory and a connection forever)."""
        if self._write_timer is None and self.transport is not None:
            self._write_left = self._unsent()
            self._write_resumed = False
            self._write_timer = self.loop.call_later(self.limits.write_timeout, self._check_writes)

    def _unsent(self) -> int:
        """Bytes written but not yet taken by the client: our buffer plus, where the OS
        tells (Linux), the socket's send queue. The kernel's queue can hold megabytes, so
        our buffer alone may stand still for a long time while a slow client reads."""
        transport = self.transport
        assert transport is not None
        left = transport.get_write_buffer_size()
        sock = transport.get_extra_info("socket")
        if sock is not None and _OUTQ is not None:
            try:
                left += struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
            except (OSError, ValueError):
                pass
        return left

    def _check_writes(self) -> None:
        self._write_timer = None
        transport = self.transport
        if transport is None or self.closed.done() or transport.get_write_buffer_size() == 0:
            return
        left = self._unsent()
        if left >= self._write_left and not self._write_resumed:
            log.debug("dropping a connection whose client reads nothing (%d bytes unread)", left)
            transport.abort()
            return
        self._watch_writes()

    # ------------------------------------------------------------------ output and close

    @property
    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def write_raw(self, data: bytes) -> None:
        if not self._closing:
            self.transport.write(data)  # type: ignore[union-attr]

    def close(self) -> None:
        """Close once what was written has been sent (bounded by ``write_timeout``)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
            if transport.get_write_buffer_size():
                self._watch_writes()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class HttpServer:
    def __init__(self, handler: Handler, limits: Limits | None = None) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.connections: set[Connection] = set()
        self.closing = False
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.base_events.Server | None = None
        self._refused_logged_at = float("-inf")

    def note_refused_connection(self) -> None:
        # one warning a minute, not one per refused connection during a flood
        now = self.loop.time()
        if now - self._refused_logged_at >= 60.0:
            self._refused_logged_at = now
            log.warning("refusing connections: %d open (the limit)", len(self.connections))

    async def listen(self, host: str, port: int) -> None:
        self._server = await self.loop.create_server(
            lambda: Connection(self), host=host, port=port, reuse_address=True, backlog=2048
        )

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return self._server.sockets[0].getsockname()[1]

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, close idle connections, give busy ones ``timeout`` to finish,
        then drop whatever is left."""
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
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
