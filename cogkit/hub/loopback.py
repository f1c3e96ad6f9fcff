"""A small keep-alive HTTP/1.1 client for one call: the hub's ``PUT /predictions/{id}`` to
its own model servers on loopback, parsed with httptools (as ``cogkit serve`` parses).

Written by hand because it is on every prediction's path and measured: httpx took ~1.5 ms
per call to a local ``cogkit serve``, this ~0.5 ms (bench/RESULTS.md, "cogkit hub"). Every
other request the hub makes (health checks, cancels, webhooks, input URLs) uses httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import httptools

IDLE_SECONDS = 3.0  # reuse a connection only while the server surely keeps it (cogkit: 5 s)


class Refused(Exception):
    """Nothing listens there (the request was never sent)."""


class Broken(Exception):
    """The connection failed after the request was sent."""


@dataclass
class Response:
    status: int
    body: bytes


@dataclass
class _Reader:
    status: int = 0
    chunks: list[bytes] = field(default_factory=list)
    complete: bool = False

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class LoopbackClient:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def request(self, method: str, path: str, body: bytes, content_type: str = "application/json") -> Response:
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        conn = None
        while self._idle:
            reader, writer, since = self._idle.pop()
            # a server that closed an idle connection (or died) has already sent its FIN
            if time.monotonic() - since > IDLE_SECONDS or writer.is_closing() or reader.at_eof():
                writer.close()
                continue
            conn = reader, writer
            break
        if conn is None:
            try:
                conn = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                raise Refused(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        return await self._exchange(*conn, head + body)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> Response:
        state = _Reader()
        parser = httptools.HttpResponseParser(state)
        try:
            writer.write(data)
            await writer.drain()
            while not state.complete:
                block = await reader.read(1 << 16)
                if not block:
                    raise Broken("the server closed the connection without a complete answer")
                parser.feed_data(block)
        except Broken:
            writer.close()
            raise
        except (OSError, httptools.HttpParserError) as exc:
            writer.close()
            raise Broken(f"{type(exc).__name__}: {exc}") from None
        status = parser.get_status_code()
        if parser.should_keep_alive():
            self._idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return Response(status, b"".join(state.chunks))

    def close(self) -> None:
        for _, writer, _ in self._idle:
            with contextlib.suppress(Exception):
                writer.close()
        self._idle.clear()

