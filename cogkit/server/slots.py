"""Prediction slots: how many predictions run at once, and the optional wait queue.

Cog refuses a prediction with 409 when every slot is busy. cogkit does the same
by default; with ``--queue N`` up to N predictions wait (FIFO) for a slot instead.
A slot is handed back before the response of the prediction that held it is
sent (deviation D5), so a sequential client never sees a spurious 409.
"""

from __future__ import annotations

import asyncio
from collections import deque


class AtCapacity(Exception):
    """Every slot is busy and the wait queue (if any) is full."""


class Slots:
    def __init__(self, capacity: int = 1, queue_limit: int = 0) -> None:
        self.capacity = max(1, capacity)
        self.queue_limit = max(0, queue_limit)
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def resize(self, capacity: int) -> None:
        """Set the capacity once the predictor's concurrency is known."""
        self.capacity = max(1, capacity)
        self._wake()

    @property
    def full(self) -> bool:
        return self.in_use >= self.capacity

    def try_acquire(self) -> bool:
        if self.in_use < self.capacity and not self._waiters:
            self.in_use += 1
            return True
        return False

    def reserve(self) -> asyncio.Future[None] | None:
        """Take a slot now (returns None) or a place in the queue (returns a future that
        resolves when the slot is ours). Raises AtCapacity when neither is possible.

        Synchronous on purpose: the decision is made before the handler awaits anything,
        so two requests can never both see the last slot as free."""
        if self.try_acquire():
            return None
        if len(self._waiters) >= self.queue_limit:
            raise AtCapacity()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return fut

    def abandon(self, fut: asyncio.Future[None]) -> None:
        """A queued prediction gave up its place (canceled while waiting)."""
        if fut.done() and not fut.cancelled():
            self.release()  # it had just been handed a slot
        else:
            fut.cancel()
            try:
                self._waiters.remove(fut)
            except ValueError:
                pass

    def release(self) -> None:
        self.in_use = max(0, self.in_use - 1)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.capacity:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self.in_use += 1
            fut.set_result(None)
