"""One Ray Serve replica of a model version (``cogkit hub --backend ray``).

A replica is a Ray actor wherever Ray placed it. It runs the same ``cogkit serve`` process
as the local backend (``runner.Instance``: the model in cogkit's worker child, so a model
that crashes fails its prediction and the worker restarts, the actor lives on) on a
loopback port of its node. ``run`` relays one prediction's server-sent events back to the
hub as Ray's streaming response; when the hub cancels that response, Ray cancels ``run``
here and the replica cancels the prediction on its server before it takes new work.

Imported by Ray's worker processes, never by the hub at start-up: it needs httpx only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from cogkit.hub.runner import Instance, ServerGone, Target

CANCEL_SETTLE = 30.0  # seconds a canceled prediction may take to leave its server


class ModelReplica:
    async def __init__(self, target: dict[str, Any], boot_timeout: float) -> None:
        self.client = httpx.AsyncClient(timeout=None)
        self.instance = Instance(Target(**target), self.client)
        # a failure here (setup failed, not ready in time) fails this replica's start: Ray
        # retries it a few times, then marks the deployment failed with this message
        self.boot_time = await self.instance.start(boot_timeout)

    async def run(self, pid: str, noun: str, model_input: dict[str, Any]) -> AsyncIterator[list[tuple[str, Any]]]:
        """Run one prediction; yields batches of ``(event, data)``: ``start``, ``log``,
        ``output``, ``metric``, then ``completed`` (the final Cog prediction body), or
        ``refused`` (the server's status and body) or ``gone`` (its server stopped). A batch is
        what one read from the server brought: each yield is a message through Ray, so fewer
        is faster (a fast prediction's start, output and completed often come in one)."""
        url = self.instance.url + "/playground/predictions"  # the server's SSE transport for any model
        finished = False
        try:
            async with self.client.stream("POST", url, json={"id": pid, "input": model_input},
                                          headers={"accept": "text/event-stream"}) as r:
                parser = _EventParser()
                async for chunk in r.aiter_bytes():
                    batch = parser.feed(chunk)
                    if not batch:
                        continue
                    finished = any(event in ("completed", "refused") for event, _ in batch)
                    yield batch
                    if finished:
                        return
            finished = True
            yield [("gone", {"error": "the model server ended the event stream before the prediction finished"})]
        except httpx.TransportError as exc:
            finished = True
            code = self.instance.proc.returncode if self.instance.proc is not None else None
            yield [("gone", {"error": "the model server stopped while running the prediction"
                             f"{f' (exit code {code})' if code is not None else ''}: {exc}"})]
        finally:
            if not finished:  # canceled by the hub (Ray cancels this task), or the stream broke
                await asyncio.shield(self._settle_cancel(pid, noun))

    async def _settle_cancel(self, pid: str, noun: str) -> None:
        """Cancel ``pid`` on the server and wait until it has left (its slot is free), so
        that Ray's next request to this replica finds the server idle."""
        deadline = time.monotonic() + CANCEL_SETTLE
        while time.monotonic() < deadline:
            try:
                r = await self.client.post(f"{self.instance.url}/{noun}/{pid}/cancel", timeout=5.0)
            except httpx.TransportError:
                return  # the server is gone; check_health reports it
            if r.status_code == 404:  # no longer in flight
                return
            await asyncio.sleep(0.02)

    async def check_health(self) -> None:
        """Ray's health check: a replica whose server died or went DEFUNCT is replaced."""
        if not self.instance.alive:
            raise ServerGone("the model server of this replica exited")
        try:
            r = await self.client.get(self.instance.url + "/health-check", timeout=10.0)
            status = r.json().get("status")
        except (httpx.TransportError, ValueError) as exc:
            raise ServerGone(f"the model server of this replica does not answer: {exc}") from None
        if status not in ("READY", "BUSY"):
            raise ServerGone(f"the model server of this replica is {status}")

    async def __del__(self) -> None:
        with contextlib.suppress(Exception):
            await self.instance.stop(grace=3.0)
            await self.client.aclose()


class _EventParser:
    """Server-sent events from the bytes as they come: ``(event, parsed JSON data)`` for each
    complete event; comments (keep-alives) skipped."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[str, Any]]:
        self.buffer += chunk
        *blocks, self.buffer = self.buffer.split(b"\n\n")
        out = []
        for block in blocks:
            event, data = "message", []
            for line in block.decode().split("\n"):
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
            if data:
                out.append((event, json.loads("\n".join(data))))
        return out
