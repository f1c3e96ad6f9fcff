"""Webhooks to API users, through an outbox table: a message is written in the same
transaction as the state it reports (a terminal webhook with the terminal status), then
delivered, signed the Standard Webhooks way, and retried with backoff until it is
answered 2xx or given up. Undelivered messages survive a hub restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from datetime import datetime, timezone

import httpx
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook as Signer

from cogkit.hub.db import Database
from cogkit.hub.db import tables as t
from cogkit.hub.ids import new_id, now

log = logging.getLogger("cogkit.hub.webhooks")

MAX_ATTEMPTS = 12
TIMEOUT = 10.0


def backoff(attempts: int) -> float:
    return min(60.0, 0.5 * 2 ** (attempts - 1))


def message(prediction_id: str, url: str, event: str, body: str) -> dict:
    """Values for one outbox row (insert it in the transaction that caused it)."""
    return dict(msg_id=f"msg_{new_id()}", prediction_id=prediction_id, url=url, event=event, body=body,
                attempts=0, next_attempt_at=now(), done=False, created_at=now())


class Outbox:
    def __init__(self, db: Database, secret: str) -> None:
        self.db = db
        self.signer = Signer(secret)
        self.wake = asyncio.Event()
        self.client = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[int] = set()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    def poke(self) -> None:
        self.wake.set()

    async def _loop(self) -> None:
        while True:
            self.wake.clear()
            try:
                delay = await self.deliver_due()
            except Exception:  # the database went away for a moment: try again shortly
                log.exception("webhook outbox")
                delay = 1.0
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)

    async def deliver_due(self) -> float:
        """Send everything due; returns the seconds until the next retry is due."""
        W = t.Webhook
        async with self.db.session() as s:
            rows = (await s.execute(sa.select(W).where(W.done.is_(False)).order_by(W.pk).limit(200))).scalars().all()
        by_prediction: dict[str, list[t.Webhook]] = defaultdict(list)
        for row in rows:
            if row.pk not in self._inflight:
                by_prediction[row.prediction_id].append(row)
        # one prediction's messages in order; different predictions side by side
        await asyncio.gather(*(self._send_in_order(group) for group in by_prediction.values()))
        async with self.db.session() as s:
            nxt = (await s.execute(sa.select(sa.func.min(W.next_attempt_at)).where(W.done.is_(False)))).scalar()
        return 5.0 if nxt is None else max(0.05, min(5.0, nxt - now()))

    async def _send_in_order(self, group: list[t.Webhook]) -> None:
        for row in group:
            if row.next_attempt_at > now():
                return  # a retry is pending: later messages wait for it
            self._inflight.add(row.pk)
            try:
                if not await self._send(row):
                    return
            finally:
                self._inflight.discard(row.pk)

    async def _send(self, row: t.Webhook) -> bool:
        ts = datetime.now(timezone.utc)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": row.msg_id,
            "webhook-timestamp": str(int(ts.timestamp())),
            "webhook-signature": self.signer.sign(row.msg_id, ts, row.body),
            "User-Agent": "cogkit-hub",
        }
        error = None
        try:
            r = await self.client.post(row.url, content=row.body.encode(), headers=headers)
            if 200 <= r.status_code < 300:
                ok = True
            else:
                ok, error = False, f"answered {r.status_code}"
        except httpx.HTTPError as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        attempts = row.attempts + 1
        values: dict = {"attempts": attempts}
        if ok:
            values["done"] = True
        else:
            values["last_error"] = error
            if attempts >= MAX_ATTEMPTS:
                values["done"] = True
                log.warning("webhook %s for %s given up after %d attempts: %s", row.event, row.prediction_id,
                            attempts, error)
            else:
                values["next_attempt_at"] = now() + backoff(attempts)
        async with self.db.begin() as conn:
            await conn.execute(sa.update(t.Webhook).where(t.Webhook.pk == row.pk).values(**values))
        return ok

    async def drain(self, timeout: float) -> None:
        """On shutdown: one more pass over what is due, within ``timeout``."""
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(self.deliver_due(), timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.aclose()
