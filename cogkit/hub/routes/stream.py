"""``urls.stream``: server-sent events as both clients parse them (reference §8).

Each event has an ``id:``; only ``output``, ``logs``, ``error`` and ``done`` are sent,
``done`` last; the whole history is replayed from the start (clients connect after the
create call returns); comment lines keep an idle stream alive. The URL is a capability
(npm fetches it without the token)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from cogkit.hub.deps import hub_of
from cogkit.hub.errors import ApiError
from cogkit.hub.service import Hub, Live, output_texts

router = APIRouter()

KEEPALIVE = 15.0


def frame(n: int, event: str, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in (data.split("\n") if data else [""]))
    return f"id: {n}\nevent: {event}\n{lines}\n".encode()


async def _from_row(hub: Hub, row) -> list[tuple[str, str]]:
    events = [("logs", line) for line in (row.logs or "").splitlines()]
    if row.output is not None:
        events += [("output", text) for text in output_texts(await hub.render_output(row.output))]
    if row.status == "failed":
        events.append(("error", json.dumps({"detail": row.error or "the prediction failed"})))
    events.append(("done", "{}" if row.status == "succeeded" else json.dumps({"reason": row.status})))
    return events


async def _follow(live: Live, request: Request) -> AsyncIterator[bytes]:
    i = 0
    while True:
        changed = live.changed
        while i < len(live.events):
            event, data = live.events[i]
            yield frame(i, event, data)
            i += 1
            if event == "done":
                return
        if await request.is_disconnected():
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), KEEPALIVE)
            continue
        yield b": keep-alive\n\n"


@router.get("/stream/{key}")
async def stream(key: str, request: Request) -> StreamingResponse:
    hub = hub_of(request)
    row = await hub.by_stream_key(key)
    if row is None:
        raise ApiError(404, "No such stream")
    live = hub.live.get(row.id)
    if live is not None:
        body: AsyncIterator[bytes] = _follow(live, request)
    else:
        events = await _from_row(hub, row)

        async def replay() -> AsyncIterator[bytes]:
            for i, (event, data) in enumerate(events):
                yield frame(i, event, data)

        body = replay()
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
