"""The HTTP layer (cogkit/server/http.py) against hostile and broken clients, at the socket
level: request smuggling, oversized heads, slow clients (slowloris), idle keep-alive,
pipelining behind a busy request, upgrades, clients that never read, connection floods,
HEAD, and shutdown. The server runs in-process on its own uvloop thread with a tiny
handler and short limits, so each case takes a fraction of a second."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvloop

from cogkit.server.http import MAX_PIPELINED, HandlerResult, HttpServer, Limits, Request, Response

TEXT = [(b"content-type", b"text/plain")]
BIG = b"x" * (4 << 20)
FAST = Limits(
    keep_alive_timeout=0.4, head_timeout=0.6, body_timeout=0.6, write_timeout=0.6, max_head=4096,
    max_headers=20, max_body=1 << 20, max_connections=8,
)


class Served:
    """An HttpServer on 127.0.0.1 in a background event loop; ``calls`` lists the
    (method, path) of every request the handler saw."""

    def __init__(self, limits: Limits) -> None:
        self.calls: list[tuple[str, str]] = []
        self.loop = uvloop.new_event_loop()
        self.server: HttpServer | None = None
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            async def boot() -> None:
                self.server = HttpServer(self.handle, limits)
                await self.server.listen("127.0.0.1", 0)
                started.set()

            self.loop.run_until_complete(boot())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10)
        assert self.server is not None
        self.port = self.server.port

    def handle(self, req: Request) -> HandlerResult:
        self.calls.append((req.method, req.path))
        if req.path == "/slow":
            return self._slow()
        if req.path == "/big":
            return 200, TEXT, BIG
        if req.path == "/echo":
            return 200, TEXT, req.body
        return 200, TEXT, b"ok"

    async def _slow(self) -> Response:
        await asyncio.sleep(0.5)
        return 200, TEXT, b"slow"

    def connections(self) -> int:
        assert self.server is not None
        return asyncio.run_coroutine_threadsafe(self._count(), self.loop).result(5)

    async def _count(self) -> int:
        assert self.server is not None
        return len(self.server.connections)

    def close(self, timeout: float = 5.0) -> float:
        assert self.server is not None
        t0 = time.monotonic()
        asyncio.run_coroutine_threadsafe(self.server.close(timeout), self.loop).result(30)
        elapsed = time.monotonic() - t0
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        return elapsed


@pytest.fixture
def served() -> Iterator[Served]:
    srv = Served(FAST)
    yield srv
    srv.close(0.5)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_all(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Everything until the server closes (True) or ``timeout`` passes (False)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except socket.timeout:
        return data, False
    except ConnectionResetError:
        return data, True


def _statuses(raw: bytes) -> list[int]:
    """Status codes of the responses in ``raw`` (bodies here never contain a status line)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


# ----------------------------------------------------------------------------- smuggling


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        b"Content-Length: 2, 2\r\n\r\n{}",
        b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n2\n{}\n0\n\n",
    ],
    ids=["cl+te", "te+cl", "dup-cl", "cl-list", "te-not-last", "chunk-not-hex", "chunk-overflow", "chunk-bare-lf"],
)
def test_ambiguous_framing_is_400_and_nothing_after_it_runs(served: Served, framing: bytes) -> None:
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(served.port) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n" + framing + smuggled)
        raw, closed = _read_all(s)
    assert _statuses(raw) == [400] and closed, raw
    assert ("GET", "/smuggled") not in served.calls


def test_requests_after_connection_close_are_not_run(served: Served) -> None:
    with _connect(served.port) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        raw, closed = _read_all(s)
    assert _statuses(raw) == [200] and closed
    assert [p for _, p in served.calls] == ["/a"]


def test_upgrade_request_is_answered_once_and_the_rest_is_not_parsed(served: Served) -> None:
    with _connect(served.port) as s:
        s.sendall(
            b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        raw, closed = _read_all(s)
    assert _statuses(raw) == [200] and closed, raw
    assert b"connection: close" in raw
    assert [p for _, p in served.calls] == ["/up"]


@pytest.mark.parametrize(
    ("target", "answer"),
    [(b"http://x", (200, "/")), (b"http://x/ok?q=1", (200, "/ok")), (b"x:80", (400, None)), (b"?x", (400, None))],
)
def test_request_targets(served: Served, target: bytes, answer: tuple[int, str | None]) -> None:
    method = b"CONNECT" if target == b"x:80" else b"GET"
    with _connect(served.port) as s:
        s.sendall(method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw, closed = _read_all(s)
    status, path = answer
    assert _statuses(raw) == [status] and closed, raw
    assert [p for _, p in served.calls] == ([path] if path else [])


# ----------------------------------------------------------------------------- head limits


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30)) + b"\r\n", 431),
    ],
    ids=["long-target", "big-header", "many-headers"],
)
def test_oversized_request_heads_are_refused(served: Served, head: bytes, status: int) -> None:
    with _connect(served.port) as s:
        s.sendall(head)
        raw, closed = _read_all(s)
    assert _statuses(raw) == [status] and closed, raw[:200]
    assert served.calls == []


def test_endless_headers_do_not_grow_memory(served: Served) -> None:
    with _connect(served.port) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        try:
            for i in range(1000):  # 8 MB of headers unless the server stops reading
                s.sendall(b"X-Pad-%d: %s\r\n" % (i, b"a" * 8000))
        except OSError:
            pass  # the server answered and closed: what we want
        raw, closed = _read_all(s)
    assert _statuses(raw) == [431] and closed


def test_oversized_body_is_413(served: Served) -> None:
    with _connect(served.port) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(40):
                s.sendall(b"%x\r\n%s\r\n" % (65536, b"a" * 65536))
        except OSError:
            pass
        raw, closed = _read_all(s)
    assert _statuses(raw) == [413] and closed
    assert served.calls == []


# ----------------------------------------------------------------------------- slow clients


def test_headers_that_never_finish_get_408(served: Served) -> None:
    with _connect(served.port) as s:
        s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        raw, closed = _read_all(s)
    assert _statuses(raw) == [408] and closed
    assert time.monotonic() - t0 < 3


def test_trickled_headers_do_not_extend_the_deadline(served: Served) -> None:
    with _connect(served.port) as s:
        s.sendall(b"GET /ok HTTP/1.1\r\n")
        t0 = time.monotonic()
        closed_at = None
        for i in range(40):  # one header every 0.1 s, for up to 4 s
            try:
                s.sendall(b"X-%d: 1\r\n" % i)
            except OSError:
                closed_at = time.monotonic()
                break
            time.sleep(0.1)
        raw, closed = _read_all(s)
    assert _statuses(raw) == [408] and closed
    assert (closed_at or time.monotonic()) - t0 < 3


def test_a_stalled_body_gets_408(served: Served) -> None:
    with _connect(served.port) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":")
        raw, closed = _read_all(s)
    assert _statuses(raw) == [408] and closed
    assert served.calls == []


def test_a_slow_but_moving_body_is_received() -> None:
    srv = Served(Limits(body_timeout=1.5))
    body = b"abcdefghij" * 3
    try:
        with _connect(srv.port) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
            for i in range(0, len(body), 3):  # 3 s in all: longer than body_timeout, never silent that long
                s.sendall(body[i : i + 3])
                time.sleep(0.3)
            raw, closed = _read_all(s)
        assert _statuses(raw) == [200] and raw.endswith(body)
    finally:
        srv.close(0.5)


def test_idle_keep_alive_connections_close(served: Served) -> None:
    with _connect(served.port) as s:
        s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.monotonic()
        raw, closed = _read_all(s)
    assert _statuses(raw) == [200] and closed
    assert time.monotonic() - t0 < 3


def test_stray_line_breaks_do_not_keep_a_connection_open(served: Served) -> None:
    with _connect(served.port) as s:
        t0 = time.monotonic()
        try:
            for _ in range(40):
                s.sendall(b"\r\n")
                time.sleep(0.1)
        except OSError:
            pass
        _, closed = _read_all(s)
    assert closed and time.monotonic() - t0 < 3


# ----------------------------------------------------------------------------- ordering


def test_a_bad_request_behind_a_busy_one_is_answered_after_it(served: Served) -> None:
    with _connect(served.port) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
        raw, closed = _read_all(s)
    assert _statuses(raw) == [200, 400] and closed
    assert raw.index(b"slow") < raw.index(b"400 Bad Request")


def test_a_slow_request_behind_a_busy_one_is_answered_after_it(served: Served) -> None:
    with _connect(served.port) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\n")
        raw, closed = _read_all(s)
    assert _statuses(raw) == [200, 408] and closed


def test_100_continue_waits_for_the_answers_before_it(served: Served) -> None:
    with _connect(served.port) as s:
        s.sendall(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        data = b""
        while b"100 Continue" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        s.sendall(b"{}")
        s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw, _ = _read_all(s)
    raw = data + raw
    assert raw.index(b"slow") < raw.index(b"100 Continue")
    assert _statuses(raw) == [200, 100, 200, 200]


def test_a_body_held_back_for_100_continue_is_not_timed_out() -> None:
    srv = Served(Limits(body_timeout=0.3, keep_alive_timeout=0.3))
    try:
        with _connect(srv.port) as s:
            s.sendall(
                b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"  # 0.5 s: longer than body_timeout
                b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
            )
            data = b""
            while b"100 Continue" not in data:
                chunk = s.recv(65536)
                assert chunk, data
                data += chunk
            s.sendall(b"{}")
            raw, _ = _read_all(s)
        assert _statuses(data + raw) == [200, 100, 200] and raw.endswith(b"{}")
    finally:
        srv.close(0.5)


# ----------------------------------------------------------------------------- output


def test_a_client_that_never_reads_is_dropped_and_requests_stop_being_read(served: Served) -> None:
    with _connect(served.port) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = 0
        s.settimeout(0.2)
        try:
            for _ in range(2000):
                s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                sent += 1
        except OSError:
            pass
        # responses are held back, then requests: the server did not produce one 4 MiB
        # answer per request sent
        time.sleep(0.3)
        handled = len(served.calls)
        assert handled <= MAX_PIPELINED + 4 < sent, (handled, sent)
        deadline = time.monotonic() + 5
        while served.connections() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served.connections() == 0  # dropped after write_timeout without progress


def test_a_slow_reader_gets_the_whole_big_response() -> None:
    srv = Served(Limits(write_timeout=1.0, keep_alive_timeout=0.2))
    try:
        with _connect(srv.port) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
                time.sleep(0.02)  # slower than the server writes: its buffer stays full for seconds
        assert data.endswith(BIG)
    finally:
        srv.close(0.5)


def test_head_gets_headers_only(served: Served) -> None:
    with _connect(served.port) as s:
        s.sendall(b"HEAD /big HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw, _ = _read_all(s)
    assert b"content-length: %d\r\n" % len(BIG) in raw
    assert _statuses(raw) == [200, 200] and raw.endswith(b"\r\n\r\nok") and len(raw) < 1000


# ----------------------------------------------------------------------------- connections


def test_connections_beyond_the_limit_get_503(served: Served) -> None:
    socks = [_connect(served.port) for _ in range(FAST.max_connections)]
    try:
        deadline = time.monotonic() + 5
        while served.connections() < FAST.max_connections and time.monotonic() < deadline:
            time.sleep(0.02)
        with _connect(served.port) as extra:
            raw, closed = _read_all(extra)
        assert _statuses(raw) == [503] and closed
        socks[0].sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw, _ = _read_all(socks[0])
        assert _statuses(raw) == [200]  # the ones already open still work
    finally:
        for s in socks:
            s.close()


def test_close_drops_clients_that_do_not_read_within_the_timeout() -> None:
    srv = Served(Limits(write_timeout=60.0, keep_alive_timeout=60.0))
    with _connect(srv.port) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        assert srv.close(timeout=0.5) < 5
