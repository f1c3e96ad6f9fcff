"""Base classes a model author subclasses, and the two method decorators."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from cogkit.scope import Scope, current_scope

F = TypeVar("F", bound=Callable[..., Any])


class BaseRunner:
    """Subclass and define ``setup(self, weights=None)`` (optional) and ``run(self, ...)``.

    ``predict`` is accepted as the older name of ``run``. Either may be a plain
    function, a coroutine, a generator or an async generator.
    """

    def setup(self, weights: Any = None) -> None:  # noqa: B027 - optional hook
        """Load the model. Called once per worker process before any prediction."""

    @property
    def scope(self) -> Scope:
        return current_scope()

    def record_metric(self, key: str, value: Any, mode: str = "replace") -> None:
        current_scope().record_metric(key, value, mode)


class BasePredictor(BaseRunner):
    """Cog's older name for BaseRunner; predictors written against it run unchanged."""


def streaming(fn: F | None = None) -> Any:
    """Opt a run()/predict() into server-sent-event responses (``Accept: text/event-stream``)."""

    def mark(f: F) -> F:
        f._cogkit_streaming = True  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


def concurrent(max: int) -> Callable[[F], F]:  # noqa: A002 - Cog's keyword name
    """Declare how many predictions an ``async def run`` may serve at once."""
    if isinstance(max, bool) or not isinstance(max, int):
        raise TypeError(f"concurrent(max=...) must be an int, got {type(max).__name__}")
    if max < 1:
        raise ValueError(f"concurrent(max=...) must be at least 1, got {max}")

    def mark(f: F) -> F:
        if max > 1 and not (inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)):
            raise TypeError("concurrent(max > 1) requires an async run() or predict()")
        f._cogkit_concurrency = max  # type: ignore[attr-defined]
        return f

    return mark
