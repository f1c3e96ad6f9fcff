"""Webhook delivery: one ordered sender per prediction.

- Events ``start``, ``output``, ``logs``, ``completed``, filtered by the request's
  ``webhook_events_filter`` (default: all four).
- ``logs`` events are throttled to one per ``COG_THROTTLE_RESPONSE_INTERVAL``
  (0.5 s); a throttled event is not lost: the latest state is sent when the
  interval ends. ``start`` and ``output`` are sent as they happen (as coglet does).
- Non-terminal webhooks are best effort (one try). The terminal one is retried with
  exponential backoff on connection errors, 429 and 5xx, and always arrives after
  every earlier webhook of the same prediction (they share one sender task), so a
  receiver never sees ``processing`` after ``succeeded``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from cogkit.server import jsonio

if TYPE_CHECKING:
    import httpx

    from cogkit.server.prediction import Prediction

log = logging.getLogger("cogkit.server.webhooks")

EVENTS = frozenset(("start", "output", "logs", "completed"))
TERMINAL_RETRIES = 12
BACKOFF_BASE = 0.1
BACKOFF_MAX = 60.0
RETRY_STATUSES = frozenset((408, 429))
NON_TERMINAL_TIMEOUT = 10.0
TERMINAL_TIMEOUT = 30.0
MAX_PENDING = 64  # non-terminal bodies waiting for a slow receiver; older ones are dropped


def backoff(attempt: int) -> float:
    return min(BACKOFF_BASE * (2**attempt), BACKOFF_MAX)


class WebhookSender:
    """Holds what all deliveries share: the HTTP client, token, throttle interval."""

    def __init__(
        self,
        client: Callable[[], Awaitable[httpx.AsyncClient]],
        *,
        token: str | None = None,
        throttle_interval: float = 0.5,
        user_agent: str = "cogkit",
    ) -> None:
        self._client = client
        self.token = token
        self.throttle_interval = throttle_interval
        self.user_agent = user_agent
        self._active: set[PredictionWebhooks] = set()

    def open(self, prediction: Prediction) -> PredictionWebhooks | None:
        if not prediction.webhook:
            return None
        hooks = PredictionWebhooks(self, prediction)
        self._active.add(hooks)
        return hooks

    def _done(self, hooks: PredictionWebhooks) -> None:
        self._active.discard(hooks)

    @property
    def pending(self) -> int:
        return len(self._active)

    async def drain(self, timeout: float) -> bool:
        """Wait until every opened delivery has finished (True) or ``timeout`` passed."""
        waits = [h.finished.wait() for h in list(self._active)]
        if not waits:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def headers(self, prediction: Prediction) -> dict[str, str]:
        h = {"Content-Type": "application/json", "User-Agent": self.user_agent}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(prediction.trace_headers)
        return h


class PredictionWebhooks:
    """The webhooks of one prediction, sent in order by one task."""

    def __init__(self, sender: WebhookSender, prediction: Prediction) -> None:
        self.sender = sender
        self.prediction = prediction
        self.url = prediction.webhook or ""
        self.wanted = prediction.events_filter if prediction.events_filter is not None else EVENTS
        self._headers = sender.headers(prediction)
        self._pending: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._last_sent = float("-inf")
        self._trailing: asyncio.TimerHandle | None = None
        self._closed = False
        self.finished = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    # ------------------------------------------------------------------ producers

    def on_change(self, change: str, data: object) -> None:
        """The prediction's listener (``PredictionRecord.subscribe``)."""
        if change == "log":
            self.emit("logs")
        elif change in ("start", "output"):
            self.emit(change)
        elif change == "completed":
            self.complete()

    def emit(self, event: str) -> None:
        """A non-terminal event happened (``start``, ``output`` or ``logs``)."""
        if self._closed or event not in self.wanted:
            return
        if event == "logs":
            wait = self._last_sent + self.sender.throttle_interval - time.monotonic()
            if wait > 0:
                if self._trailing is None:
                    loop = asyncio.get_running_loop()
                    self._trailing = loop.call_later(wait, self._send_trailing)
                return
        self._enqueue(event)

    def _send_trailing(self) -> None:
        self._trailing = None
        if not self._closed:
            self._enqueue("logs")

    def _enqueue(self, event: str) -> None:
        self._last_sent = time.monotonic()
        self._pending.append((event, jsonio.dumps(self.prediction.body())))
        while len(self._pending) > MAX_PENDING:
            self._pending.popleft()  # later bodies carry everything the dropped one did
        self._wake.set()

    def complete(self) -> None:
        """The prediction reached its terminal state: queue the final webhook."""
        if self._closed:
            return
        self._closed = True
        if self._trailing is not None:
            self._trailing.cancel()
            self._trailing = None
        if "completed" in self.wanted:
            self._pending.append(("completed", jsonio.dumps(self.prediction.body())))
        self._wake.set()

    # ------------------------------------------------------------------ delivery

    async def _run(self) -> None:
        try:
            while True:
                while not self._pending:
                    if self._closed:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                event, body = self._pending.popleft()
                if event == "completed":
                    await self._deliver_terminal(body)
                    return
                await self._send_once(body)
        except asyncio.CancelledError:
            raise
        except Exception:  # a webhook problem must never take anything else down
            log.exception("webhook sender for %s failed", self.prediction.id)
        finally:
            self.finished.set()
            self.sender._done(self)

    async def _post(self, body: bytes, timeout: float) -> Any:
        client = await self.sender._client()
        return await client.post(self.url, content=body, headers=self._headers, timeout=timeout)

    async def _send_once(self, body: bytes) -> None:
        try:
            resp = await self._post(body, NON_TERMINAL_TIMEOUT)
            if resp.status_code >= 400:
                log.debug("webhook for %s answered %s", self.prediction.id, resp.status_code)
        except Exception as exc:  # best effort, and never a reason to skip the terminal one
            log.debug("webhook for %s failed: %s: %s", self.prediction.id, type(exc).__name__, exc)

    async def _deliver_terminal(self, body: bytes) -> None:
        import httpx

        for attempt in range(TERMINAL_RETRIES + 1):
            reason: str
            try:
                resp = await self._post(body, TERMINAL_TIMEOUT)
                if resp.status_code < 300:
                    return
                reason = f"HTTP {resp.status_code}"
                if resp.status_code < 500 and resp.status_code not in RETRY_STATUSES:
                    log.warning(
                        "terminal webhook for %s refused with %s; not retrying", self.prediction.id, reason
                    )
                    return
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # e.g. a host name that cannot be encoded: retrying cannot help
                log.error("terminal webhook for %s cannot be sent: %s: %s", self.prediction.id, type(exc).__name__, exc)
                return
            if attempt < TERMINAL_RETRIES:
                delay = backoff(attempt)
                log.info(
                    "terminal webhook for %s failed (%s); retry %d/%d in %.1fs",
                    self.prediction.id, reason, attempt + 1, TERMINAL_RETRIES, delay,
                )
                await asyncio.sleep(delay)
        log.error("terminal webhook for %s not delivered after %d retries", self.prediction.id, TERMINAL_RETRIES)
