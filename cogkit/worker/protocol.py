"""Messages between the parent (Worker client) and the child process running a predictor.

Frames are pickled instances of the dataclasses below, length-prefixed on a Unix
socket (see ``cogkit.worker._framing``). Bump PROTOCOL_VERSION when a message changes:
the child refuses a parent of another version instead of misreading it.

Order on the wire: the parent sends ``Hello`` first; the child answers ``Loaded`` (or
``LoadFailed`` and exits), then ``Log(id=None)``... and ``SetupDone``. For each
``Predict`` the child sends Log/Output/Metric events and then exactly one terminal
event (Done/Failed/Canceled); every Log of that prediction precedes its terminal.

Values inside ``Predict.inputs`` and output messages are plain JSON-like data
(dict/list/str/int/float/bool/None) except for two marker classes:
``FileInput`` (a prepared file input) and ``FileOutput`` (a file the predictor
returned, left on disk for the parent to encode, upload or move).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

PROTOCOL_VERSION = 2

# ----------------------------------------------------------------------- value markers


@dataclass(frozen=True)
class FileInput:
    """A file input, prepared by the parent (cogkit.files).

    path: local file holding the bytes (a temp file the parent deletes afterwards),
          or the value as given when ``kind == "local"``.
    source: the value as the client sent it (URL, data URL or plain path string).
    kind: "http" (downloaded from http/https), "data" (decoded data URL) or
          "local" (a plain string, passed through as a path like Cog does).
    """

    path: str
    source: str
    kind: Literal["http", "data", "local"]


@dataclass(frozen=True)
class FileOutput:
    """A file the predictor returned (a Path or a file object written to disk).

    owned: the file is a temp copy made for the parent, alone in a temp folder made
    for it; the parent moves the file away or deletes it, then calls ``discard()``.
    """

    path: str
    owned: bool = False

    def discard(self) -> None:
        """Delete an owned temp copy (if still there) and its folder; no-op otherwise."""
        if not self.owned:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):  # not empty: not ours to remove
            os.rmdir(os.path.dirname(self.path))


Key = str | int  # a step into a value: a dict key or a list index


def map_files(value: Any, fn: Callable[[Any, tuple[Key, ...]], Any], kinds: type | tuple[type, ...] = (FileInput, FileOutput)) -> Any:
    """``value`` with every ``kinds`` instance replaced by ``fn(item, where)``, ``where``
    being the keys and indexes that lead to it; lists, tuples (as lists) and dict values are
    walked (a changed tuple comes back as a list). A value that holds none comes back as
    the same object. The one walker of file
    values, on both sides (``kinds`` also picks the CLI's ``@file`` markers or URL strings)."""

    def walk(v: Any, where: tuple[Key, ...]) -> Any:
        if isinstance(v, kinds):
            return fn(v, where)
        if isinstance(v, dict):
            out = {k: walk(x, (*where, k)) for k, x in v.items()}
            return v if all(out[k] is x for k, x in v.items()) else out
        if isinstance(v, (list, tuple)):
            items = [walk(x, (*where, i)) for i, x in enumerate(v)]
            return v if all(a is b for a, b in zip(items, v)) else items
        return v

    return walk(value, ())


def find_files(value: Any, kinds: type | tuple[type, ...] = FileOutput) -> list[Any]:
    """Every ``kinds`` instance in ``value``, in order."""
    found: list[Any] = []
    if isinstance(value, (kinds, dict, list, tuple)):
        map_files(value, lambda f, _: found.append(f) or f, kinds)
    return found


# ----------------------------------------------------------------------- parent -> child


@dataclass(frozen=True)
class Hello:
    """First message: what the child should load. ``max_concurrency`` None means
    "from @concurrent(max=N), else 1"; ``weights`` is passed to setup(weights=...)."""

    version: int = PROTOCOL_VERSION
    ref: str = "predict.py:Predictor"
    project_dir: str = "."
    mode: Literal["predict", "train"] = "predict"
    weights: str | None = None
    max_concurrency: int | None = None


@dataclass(frozen=True)
class Predict:
    id: str
    inputs: dict[str, Any]
    context: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Cancel:
    id: str


@dataclass(frozen=True)
class Healthcheck:
    id: str


@dataclass(frozen=True)
class Shutdown:
    pass


# ----------------------------------------------------------------------- child -> parent


@dataclass(frozen=True)
class Loaded:
    """The predictor was imported and inspected; setup() starts next."""

    schema: dict[str, Any]  # the OpenAPI document (cogkit.schema.openapi_document)
    is_async: bool
    max_concurrency: int
    streaming: bool
    output_iterator: bool
    has_healthcheck: bool


@dataclass(frozen=True)
class LoadFailed:
    error: str  # includes the exception type and message
    traceback: str = ""


@dataclass(frozen=True)
class SetupDone:
    ok: bool
    error: str | None = None  # "<ExceptionType>: <message>" when not ok
    traceback: str = ""


@dataclass(frozen=True)
class Log:
    """Captured output. ``id`` is None for setup-time and unattributed output."""

    id: str | None
    text: str
    stream: Literal["stdout", "stderr"] = "stdout"


@dataclass(frozen=True)
class Output:
    """One item yielded by an iterator predictor."""

    id: str
    value: Any


@dataclass(frozen=True)
class Metric:
    id: str
    name: str
    value: Any
    mode: str = "replace"


@dataclass(frozen=True)
class Done:
    """Terminal: succeeded. ``output`` is the return value (None for iterators: the
    parent accumulated the Output items)."""

    id: str
    output: Any = None
    predict_time: float = 0.0


@dataclass(frozen=True)
class Failed:
    id: str
    error: str
    predict_time: float = 0.0


@dataclass(frozen=True)
class Canceled:
    id: str
    predict_time: float = 0.0


@dataclass(frozen=True)
class HealthResult:
    """``error``: Cog's full message, e.g. "Healthcheck failed: <exception message>"."""

    id: str
    healthy: bool
    error: str | None = None


TERMINAL = (Done, Failed, Canceled)
