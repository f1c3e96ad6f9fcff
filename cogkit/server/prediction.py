"""One prediction's state and the bodies the server shows of it.

Lifecycle: ``starting`` (accepted, maybe waiting for a slot) -> ``processing``
(the worker runs it) -> exactly one of ``succeeded`` / ``failed`` / ``canceled``.
Every body is coglet's (id, status, output, logs, error, metrics) plus the legacy
envelope of deviation D4 (input, created_at, started_at, completed_at; null until
known); see ``echo_input`` for what the echoed input leaves out.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any

from cogkit.worker.record import PredictionRecord

FAILED_PREFIX = "Prediction failed: Prediction failed: "  # coglet's wording for exceptions in predict()
# Failures the worker itself reports (crash, restart, shutdown) keep their own words.
WORKER_ERRORS = ("Worker crashed", "Worker restarted", "Worker was shut down")


def now_iso() -> str:
    """RFC 3339, UTC, microseconds (the legacy server's format)."""
    return datetime.now(timezone.utc).isoformat()


_id_lock = threading.Lock()
_last_id_ns = 0


def new_prediction_id() -> str:
    """``pred_`` + 16 hex digits of a strictly increasing nanosecond clock (coglet's shape)."""
    global _last_id_ns
    with _id_lock:
        ns = max(time.time_ns(), _last_id_ns + 1)
        _last_id_ns = ns
    return f"pred_{ns:016x}"


# An absolute URI (RFC 3986): scheme ":" then only URI characters, percent-escapes well formed.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*(?:#(?:[A-Za-z0-9\-._~:/?@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)?$")


def is_uri(value: Any) -> bool:
    return isinstance(value, str) and _URI.match(value) is not None


def echo_input(inputs: dict[str, Any], secrets: frozenset[str], file_fields: frozenset[str]) -> dict[str, Any]:
    """The input as bodies echo it (D4), always valid against the Input schema:

    - Secret fields are left out: Cog's schema marks them ``writeOnly``, so a response
      may not carry them at all, not even masked;
    - a file field whose value is not a URI (Cog passes such values to predict() as
      local paths) is left out: it is not a valid ``format: uri`` value.
    """
    out = {}
    for name, value in inputs.items():
        if name in secrets:
            continue
        if name in file_fields and value is not None:
            values = value if isinstance(value, list) else [value]
            if not all(is_uri(v) for v in values):
                continue
        out[name] = value
    return out


class Prediction(PredictionRecord):
    """One prediction as the server holds it: the record (``cogkit.worker.record``) plus
    the request's envelope, its ISO timestamps, and what cancel needs to know."""

    def __init__(
        self,
        id: str,
        input_echo: dict[str, Any],
        *,
        iterator: bool = False,
        webhook: str | None = None,
        events_filter: frozenset[str] | None = None,
        context: dict[str, str] | None = None,
        trace_headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(id, iterator=iterator)
        self.input = input_echo
        self.worker_inputs: dict[str, Any] = {}  # validated values as sent, for the worker
        self.webhook = webhook
        self.events_filter = events_filter
        self.context = context or {}
        self.trace_headers = trace_headers or {}
        self.created_at = now_iso()
        self.started_at: str | None = None
        self.completed_at: str | None = None
        self.cancel_requested = False
        self.in_worker = False  # handed to the worker (cancel must go through it)
        self.fetching: asyncio.Future[Any] | None = None  # its input files being fetched (cancel stops it)

    def start(self) -> None:
        self.started_at = now_iso()
        super().start()

    def failure_text(self, error: str) -> str:
        return error if error.startswith(WORKER_ERRORS) else FAILED_PREFIX + error

    def finish(self, status: str, *, output: Any = None, error: str | None = None, predict_time: float | None = None) -> None:
        if self.started_at is None and status != "canceled":  # failed before it began: it began now
            self.started_at = now_iso()
            self._t_start = time.perf_counter()
        self.completed_at = now_iso()
        super().finish(status, output=output, error=error, predict_time=predict_time)

    # ------------------------------------------------------------------ views

    def body(self) -> dict[str, Any]:
        """The prediction as responses and webhooks show it."""
        body: dict[str, Any] = {"id": self.id, "status": self.status, "input": self.input}
        if self.terminal:
            if self.output is not None:
                body["output"] = self.output
        elif self.output_items is not None:
            body["output"] = list(self.output_items)
        body["logs"] = self.logs
        if self.error is not None:
            body["error"] = self.error
        body["metrics"] = self.metrics()
        body["created_at"] = self.created_at
        body["started_at"] = self.started_at
        body["completed_at"] = self.completed_at
        return body

    def accepted_body(self) -> dict[str, Any]:
        """The 202 answer to an async create: coglet's two keys plus the D4 envelope."""
        return {
            "id": self.id,
            "status": "starting",
            "input": self.input,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
        }
