"""One prediction's state and the bodies the server shows of it.

Lifecycle: ``starting`` (accepted, maybe waiting for a slot) -> ``processing``
(the worker runs it) -> exactly one of ``succeeded`` / ``failed`` / ``canceled``.
Every body is coglet's (id, status, output, logs, error, metrics) plus the legacy
envelope of deviation D4 (input, created_at, started_at, completed_at; null until
known); see ``echo_input`` for what the echoed input leaves out.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any

from cogkit.scope import MetricRecorder, nest_metrics

TERMINAL = frozenset(("succeeded", "failed", "canceled"))


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


def secret_fields(input_component: dict[str, Any]) -> frozenset[str]:
    """Names of the inputs whose values must never be echoed (Secret, List[Secret])."""

    def is_secret(schema: Any) -> bool:
        if not isinstance(schema, dict):
            return False
        if schema.get("x-cog-secret") or schema.get("format") == "password":
            return True
        if is_secret(schema.get("items")):
            return True
        return any(is_secret(s) for s in itertools.chain(schema.get("anyOf", ()), schema.get("allOf", ())))

    props = input_component.get("properties") or {}
    return frozenset(name for name, schema in props.items() if is_secret(schema))


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


class Prediction:
    """Mutable state of one prediction; owned by the event loop (no locking)."""

    def __init__(
        self,
        id: str,
        input_echo: dict[str, Any],
        *,
        webhook: str | None = None,
        events_filter: frozenset[str] | None = None,
        context: dict[str, str] | None = None,
        trace_headers: dict[str, str] | None = None,
    ) -> None:
        self.id = id
        self.input = input_echo
        self.worker_inputs: dict[str, Any] = {}  # validated values as sent, for the worker
        self.webhook = webhook
        self.events_filter = events_filter
        self.context = context or {}
        self.trace_headers = trace_headers or {}
        self.status = "starting"
        self.created_at = now_iso()
        self.started_at: str | None = None
        self.completed_at: str | None = None
        self.error: str | None = None
        self.output: Any = None
        self.output_items: list[Any] | None = None  # iterator items (and per-item events)
        self._logs: list[str] = []
        self._metrics = MetricRecorder()
        self.predict_time: float | None = None
        self._t_start: float | None = None
        self.cancel_requested = False
        self.in_worker = False  # handed to the worker (cancel must go through it)
        self.fetching: asyncio.Future[Any] | None = None  # its input files being fetched (cancel stops it)
        self.done = asyncio.Event()

    # ------------------------------------------------------------------ transitions

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def start(self) -> None:
        self.status = "processing"
        self.started_at = now_iso()
        self._t_start = time.perf_counter()

    def append_log(self, text: str) -> None:
        self._logs.append(text)

    def add_output_item(self, item: Any) -> None:
        if self.output_items is None:
            self.output_items = []
        self.output_items.append(item)

    def record_metric(self, name: str, value: Any, mode: str) -> None:
        try:
            self._metrics.record(name, value, mode)
        except (TypeError, ValueError):
            pass  # the child already rejected bad metrics in user code; never fail here

    def finish(self, status: str, *, output: Any = None, error: str | None = None, predict_time: float | None = None) -> None:
        assert status in TERMINAL and not self.terminal
        self.status = status
        if status == "succeeded":
            self.output = output
        elif self.output_items is not None:
            self.output = list(self.output_items)  # partial iterator output is kept
        self.error = error if status == "failed" else None
        if self.started_at is None and status != "canceled":  # failed before it began: it began now
            self.started_at = now_iso()
            self._t_start = time.perf_counter()
        self.completed_at = now_iso()
        if predict_time is None or predict_time <= 0:
            predict_time = time.perf_counter() - self._t_start if self._t_start is not None else 0.0
        self.predict_time = predict_time
        self.done.set()

    # ------------------------------------------------------------------ views

    @property
    def logs(self) -> str:
        if len(self._logs) > 1:
            self._logs = ["".join(self._logs)]
        return self._logs[0] if self._logs else ""

    def metrics(self) -> dict[str, Any]:
        out = nest_metrics(self._metrics.snapshot())
        if self.terminal and self.predict_time is not None:
            out["predict_time"] = self.predict_time
        return out

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
