"""What the parent knows of one prediction, folded from the worker's events.

``PredictionRecord.apply(event)`` is the one place where Log/Output/Metric/Done/Failed/
Canceled become a status, logs, output items and metrics, for the CLI and the server
alike (the server's ``Prediction`` adds its envelope and bodies). Whoever wants to hear
of a change subscribes a listener (the server's webhooks and SSE streams, the CLI's
display) instead of being relayed to by hand.

Listeners are called as ``listener(change, data)``:

- ``"start"`` (None): the prediction began running;
- ``"log"`` (the text, its stream): captured output;
- ``"output"`` (the item's index, the item): one output item (an iterator's, or one
  per item of a returned list of at most 100, one for any other returned value, as
  coglet reports them);
- ``"metric"`` (name, value, mode);
- ``"completed"`` (None): sent by ``announce()``, not by reaching a terminal status, so
  that the owner can free what the prediction held (the server's slot) before anyone is
  told it ended. Listeners are dropped after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from cogkit.scope import MetricRecorder, nest_metrics
from cogkit.worker.protocol import Canceled, Done, Failed, Log, Metric, Output

TERMINAL = frozenset(("succeeded", "failed", "canceled"))
Listener = Callable[[str, Any], None]

# coglet sends a returned list as one output event per item up to this length
_MAX_ITEM_EVENTS = 100


class PredictionRecord:
    """One prediction's state; owned by one event loop (no locking).

    ``iterator``: the predictor yields its output (the output is the items it yielded,
    even none). Lifecycle: ``starting`` -> ``processing`` (``start()``) -> exactly one of
    ``succeeded`` / ``failed`` / ``canceled`` (``apply`` of a terminal event, or ``finish``).
    """

    def __init__(self, id: str, *, iterator: bool = False) -> None:
        self.id = id
        self.iterator = iterator
        self.status = "starting"
        self.error: str | None = None
        self.output: Any = None
        self.output_items: list[Any] | None = None  # items so far (iterator items, or per-item events)
        self.predict_time: float | None = None
        self.done = asyncio.Event()  # set on the terminal status
        self._logs: list[str] = []
        self._metrics = MetricRecorder()  # replays the child's changes (incr and append send deltas)
        self._t_start: float | None = None
        self._listeners: list[Listener] = []

    # ------------------------------------------------------------------ listeners

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _notify(self, change: str, data: Any) -> None:
        for listener in self._listeners:
            listener(change, data)

    def announce(self) -> None:
        """Tell the listeners the prediction is over (once, after ``finish``)."""
        assert self.terminal
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener("completed", None)

    # ------------------------------------------------------------------ events

    def apply(self, ev: Any) -> bool:
        """Fold one worker event in; True when it was the terminal one."""
        kind = type(ev)
        if kind is Log:
            self.log(ev.text, ev.stream)
        elif kind is Output:
            self.add_output(ev.value)
        elif kind is Metric:
            self.record_metric(ev.name, ev.value, ev.mode)
        elif kind is Done:
            if self.iterator or self.output_items is not None:
                output = list(self.output_items or ())
            else:
                output = ev.output
                for item in output if isinstance(output, list) and len(output) <= _MAX_ITEM_EVENTS else [output]:
                    self.add_output(item)
            self.finish("succeeded", output=output, predict_time=ev.predict_time)
            return True
        elif kind is Failed:
            self.finish("failed", error=self.failure_text(ev.error), predict_time=ev.predict_time)
            return True
        elif kind is Canceled:
            self.finish("canceled", predict_time=ev.predict_time)
            return True
        return False

    def failure_text(self, error: str) -> str:
        """The error a Failed event's message becomes (the server words it as coglet does)."""
        return error

    # ------------------------------------------------------------------ transitions

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def start(self) -> None:
        self.status = "processing"
        self._t_start = time.perf_counter()
        self._notify("start", None)

    def log(self, text: str, stream: str = "stdout") -> None:
        self._logs.append(text)
        if self._listeners:
            self._notify("log", (text, stream))

    def add_output(self, item: Any) -> None:
        if self.output_items is None:
            self.output_items = []
        self.output_items.append(item)
        if self._listeners:
            self._notify("output", (len(self.output_items) - 1, item))

    def record_metric(self, name: str, value: Any, mode: str = "replace") -> None:
        try:
            self._metrics.record(name, value, mode)
        except (TypeError, ValueError):
            return  # the child already rejected bad metrics in user code; never fail here
        if self._listeners:
            self._notify("metric", (name, value, mode))

    def finish(self, status: str, *, output: Any = None, error: str | None = None, predict_time: float | None = None) -> None:
        """Reach a terminal status. A failed or canceled iterator keeps its items as output."""
        assert status in TERMINAL and not self.terminal
        self.status = status
        if status == "succeeded":
            self.output = output
        elif self.output_items is not None:
            self.output = list(self.output_items)
        self.error = error if status == "failed" else None
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
        """The metrics as bodies show them (dotted names nested), with ``predict_time``
        once terminal."""
        out = nest_metrics(self._metrics.snapshot())
        if self.terminal and self.predict_time is not None:
            out["predict_time"] = self.predict_time
        return out
