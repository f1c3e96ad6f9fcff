"""Server-sent events for ``Accept: text/event-stream`` (predictors marked ``@streaming``).

Events: ``start`` ``{"id","status":"processing"}``, ``output`` ``{"chunk","index"}``,
``log`` ``{"source","data"}``, ``metric`` ``{"name","value","mode"}`` and
``completed`` (the final prediction body), after which the stream ends. Each
prediction keeps the last ``COG_STREAM_HISTORY_CAPACITY`` events so a client that
re-attaches with ``PUT /predictions/{id}`` gets them replayed; a subscriber too slow
to keep up gets an ``error`` event and is closed rather than stalling the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from cogkit.server import jsonio

KEEPALIVE_SECONDS = 15.0
SUBSCRIBER_BUFFER = 4096
MAX_SUBSCRIBERS = 1024
KEEPALIVE = b": keep-alive\n\n"


def frame(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + jsonio.dumps(data) + b"\n\n"


class TooManySubscribers(Exception):
    pass


class Subscription:
    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        # room for a full replay of the history (plus the end marker), however large
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(max(SUBSCRIBER_BUFFER, stream.capacity + 2))

    async def next(self, timeout: float = KEEPALIVE_SECONDS) -> bytes | None:
        """The next frame; KEEPALIVE after ``timeout`` of silence; None when the stream ended."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return KEEPALIVE

    def close(self) -> None:
        self.stream.subscribers.discard(self)


class EventStream:
    def __init__(self, history: int = 1024) -> None:
        self.capacity = history
        self.history: deque[bytes] = deque(maxlen=history if history > 0 else 0)
        self.dropped = 0  # events pushed out of the history
        self.subscribers: set[Subscription] = set()
        self.closed = False

    def publish(self, event: str, data: Any) -> None:
        if self.closed:
            return
        payload = frame(event, data)
        if self.capacity > 0:
            if len(self.history) == self.history.maxlen:
                self.dropped += 1
            self.history.append(payload)
        for sub in list(self.subscribers):
            self._offer(sub, payload)
        if event == "completed":
            self.closed = True
            for sub in list(self.subscribers):
                self._offer(sub, None)

    def _offer(self, sub: Subscription, payload: bytes | None) -> None:
        try:
            sub.queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.subscribers.discard(sub)
            # make room for the error and the end marker, then end that stream
            skipped = 1  # the event that did not fit
            while sub.queue.qsize() > sub.queue.maxsize - 2:
                sub.queue.get_nowait()
                skipped += 1
            sub.queue.put_nowait(
                frame("error", {"error": "SSE stream lagged; events were dropped", "skipped": skipped})
            )
            sub.queue.put_nowait(None)

    def subscribe(self, replay: bool) -> Subscription:
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            raise TooManySubscribers()
        sub = Subscription(self)
        if replay:
            if self.dropped:
                sub.queue.put_nowait(
                    frame(
                        "error",
                        {"error": "SSE stream replay truncated; events were dropped", "skipped": self.dropped},
                    )
                )
                sub.queue.put_nowait(None)
                return sub
            for payload in self.history:
                sub.queue.put_nowait(payload)
        if self.closed:
            sub.queue.put_nowait(None)
        else:
            self.subscribers.add(sub)
        return sub


def prediction_listener(stream: EventStream, prediction: Any) -> Callable[[str, Any], None]:
    """A listener (``PredictionRecord.subscribe``) that publishes the prediction's changes
    on ``stream`` as the events above; ``completed`` carries its final body."""

    def on_change(change: str, data: Any) -> None:
        if change == "log":
            stream.publish("log", {"source": data[1], "data": data[0]})
        elif change == "output":
            stream.publish("output", {"chunk": data[1], "index": data[0]})
        elif change == "metric":
            stream.publish("metric", {"name": data[0], "value": data[1], "mode": data[2]})
        elif change == "start":
            stream.publish("start", {"id": prediction.id, "status": "processing"})
        elif change == "completed":
            stream.publish("completed", prediction.body())

    return on_change
