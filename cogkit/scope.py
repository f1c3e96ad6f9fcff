"""Per-prediction scope: user metrics and the request ``context``.

The worker opens one Scope per prediction (a contextvar, so concurrent async
predictions each see their own); outside a prediction ``current_scope()`` returns
a scope whose recorder silently drops everything, as in Cog.
"""

from __future__ import annotations

import contextvars
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

_MODES = {"replace": "replace", "incr": "incr", "increment": "incr", "append": "append"}
_SEGMENT = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?$")
_VALUE_TYPES = (bool, int, float, str, list, dict)

MetricSink = Callable[[str, Any, str], None]


def check_metric_name(name: str) -> None:
    """Raise ValueError unless ``name`` follows Cog's metric naming rules."""
    if not isinstance(name, str) or not name:
        raise ValueError("metric name must be a non-empty string")
    if len(name) > 128:
        raise ValueError(f"metric name {name!r} is longer than 128 characters")
    if name == "predict_time" or name.startswith("cog."):
        raise ValueError(f"metric name {name!r} is reserved")
    segments = name.split(".")
    if len(segments) > 4:
        raise ValueError(f"metric name {name!r} has more than 4 dot-separated segments")
    for seg in segments:
        if not _SEGMENT.match(seg) or "__" in seg:
            raise ValueError(
                f"metric name {name!r}: each segment must start with a letter, end with a letter "
                "or digit, and use only letters, digits and single underscores"
            )


class MetricRecorder:
    """Holds one prediction's metrics; every change is also passed to ``sink``."""

    def __init__(self, sink: MetricSink | None = None) -> None:
        self._values: dict[str, Any] = {}
        self._sink = sink

    def record(self, key: str, value: Any, mode: str | None = "replace") -> None:
        mode = "replace" if mode is None else mode
        if mode not in _MODES:
            raise TypeError(
                f"Invalid metric mode: {mode!r}. Expected 'replace', 'incr', or 'append'."
            )
        mode = _MODES[mode]
        check_metric_name(key)
        if value is not None and not isinstance(value, _VALUE_TYPES):
            raise TypeError(
                f"metric {key!r}: value of type {type(value).__name__} is not one of "
                "bool, int, float, str, list, dict"
            )
        old = self._values.get(key)
        if mode == "replace":
            if value is None:
                self._values.pop(key, None)
            else:
                if old is not None and type(old) is not type(value):
                    raise TypeError(
                        f"metric {key!r} holds a {type(old).__name__}; delete it before "
                        f"recording a {type(value).__name__}"
                    )
                self._values[key] = value
        elif mode == "incr":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return  # Cog ignores non-numeric increments
            base = old if isinstance(old, (int, float)) and not isinstance(old, bool) else 0
            self._values[key] = base + value
        else:  # append
            if old is None:
                self._values[key] = [value]
            elif isinstance(old, list):
                old.append(value)
            else:
                self._values[key] = [old, value]
        if self._sink is not None:
            self._sink(key, value, mode)

    def delete(self, key: str) -> None:
        self.record(key, None, "replace")

    def __setitem__(self, key: str, value: Any) -> None:
        self.record(key, value)

    def __delitem__(self, key: str) -> None:
        self.delete(key)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def snapshot(self) -> dict[str, Any]:
        return dict(self._values)


class _NoopRecorder(MetricRecorder):
    """The recorder outside a prediction: accepts and forgets everything."""

    def record(self, key: str, value: Any, mode: str | None = "replace") -> None:
        return None


class Scope:
    """What a running prediction can reach: its metrics and the request's context."""

    def __init__(self, metrics: MetricRecorder, context: Mapping[str, str] | None = None) -> None:
        self.metrics = metrics
        self.context: dict[str, str] = dict(context or {})

    def record_metric(self, key: str, value: Any, mode: str = "replace") -> None:
        self.metrics.record(key, value, mode)


_NOOP_RECORDER = _NoopRecorder()
_NOOP_SCOPE = Scope(_NOOP_RECORDER)
_current: contextvars.ContextVar[Scope] = contextvars.ContextVar("cogkit_scope", default=_NOOP_SCOPE)


def current_scope() -> Scope:
    """The scope of the prediction running in this context (a no-op scope outside one)."""
    return _current.get()


@contextmanager
def scope(sink: MetricSink | None = None, context: Mapping[str, str] | None = None) -> Iterator[Scope]:
    """Open a prediction scope for the duration of the block (used by the worker)."""
    sc = Scope(MetricRecorder(sink), context)
    token = _current.set(sc)
    try:
        yield sc
    finally:
        _current.reset(token)


_warned_emit = False


def emit_metric(name: str, value: Any) -> None:
    """Deprecated Cog shim: ``current_scope().record_metric(name, value)``."""
    global _warned_emit
    if not _warned_emit:
        _warned_emit = True
        print("emit_metric is deprecated; use current_scope().record_metric()", file=sys.stderr)
    current_scope().record_metric(name, value)


def nest_metrics(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted metric names build nested objects: ``timing.inference`` -> ``{"timing": {...}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if "." not in key:
            out[key] = value
            continue
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return out
