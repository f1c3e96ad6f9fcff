"""Capture of everything the child process writes, attributed to the prediction that wrote it.

Two routes lead into one ordered stream of ``(prediction id, text, stream)`` records:

* Python-level writes (``print``, ``sys.stderr``, ``logging``): ``sys.stdout`` and
  ``sys.stderr`` are replaced by RoutedStream objects that buffer per line and attribute
  text by a contextvar, so concurrent async predictions each get their own output.
* C-level writes (``os.write(1, ...)``, libc ``printf``, subprocesses, which inherit the
  file descriptors): fds 1 and 2 are pipes that this module drains. Such bytes cannot
  say who wrote them; they go to the one prediction in flight, or to no prediction
  (``None``: setup output, or ambiguous under concurrency).

Ordering: every drain of the pipes and every emit happens under one lock, and a
Python-level write first drains the pipes, so text written earlier by the same thread
(whatever the route) is emitted earlier. ``end()`` drains everything a prediction wrote
before its terminal event is sent.
"""

from __future__ import annotations

import codecs
import contextvars
import io
import os
import select
import sys
import threading
from collections.abc import Callable
from typing import Any

# The prediction whose code is running in this context (thread or asyncio task).
current_prediction: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cogkit_current_prediction", default=None
)

Emit = Callable[[str | None, str, str], None]  # (prediction id | None, text, "stdout" | "stderr")

_OTHER = {"stdout": "stderr", "stderr": "stdout"}
_MAX_PARTIAL = 16384  # a line longer than this is emitted without waiting for its newline
_IOLBF = 1  # setvbuf mode: line buffered (same value in glibc and musl)


class _Pipe:
    def __init__(self, fd: int, stream: str) -> None:
        self.fd = fd
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")


class OutputCapture:
    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._lock = threading.Lock()
        self._partial: dict[tuple[str | None, str], str] = {}
        self._active: dict[str, None] = {}  # in-flight prediction ids, in start order
        self._pipes: list[_Pipe] = []
        self._fflush: Callable[[Any], Any] | None = None
        # Called after each Python-level write, outside the lock: where a cancel that
        # arrived during the write is raised (see child.SyncRunner).
        self.after_write: Callable[[], None] | None = None

    # ------------------------------------------------------------------ setup

    def install(self) -> None:
        """Point fds 1/2 at pipes drained here and sys.stdout/sys.stderr at RoutedStreams."""
        for fd, stream in ((1, "stdout"), (2, "stderr")):
            r, w = os.pipe()
            os.dup2(w, fd)  # fd stays inheritable: subprocesses write into the pipe too
            os.close(w)
            os.set_blocking(r, False)
            self._pipes.append(_Pipe(r, stream))
        sys.stdout = RoutedStream(self, "stdout", 1)
        sys.stderr = RoutedStream(self, "stderr", 2)
        self._fflush = _line_buffer_libc_stdio()
        threading.Thread(target=self._pump, name="cogkit-output", daemon=True).start()

    # ------------------------------------------------------------------ prediction bounds

    def begin(self, pid: str) -> None:
        with self._lock:
            self._drain_locked()  # output written before the prediction stays with its owner
            self._active[pid] = None

    def drain(self) -> None:
        """Emit what C-level writers put in the pipes so far (before an Output event,
        so output written before a ``yield`` arrives before the item)."""
        with self._lock:
            self._drain_locked()

    def end(self, pid: str | None) -> None:
        """Emit everything ``pid`` wrote (None: setup), then stop attributing output to it."""
        self._flush_buffers()
        with self._lock:
            self._drain_locked()
            for stream in ("stdout", "stderr"):
                text = self._partial.pop((pid, stream), None)
                if text:
                    self._emit(pid, text, stream)
            if pid is not None:
                self._active.pop(pid, None)

    def _flush_buffers(self) -> None:
        # Output still held in a TextIOWrapper (sys.__stdout__) or libc's stdio buffers.
        for f in (sys.__stdout__, sys.__stderr__):
            try:
                if f is not None:
                    f.flush()
            except (OSError, ValueError):
                pass
        if self._fflush is not None:
            self._fflush(None)

    # ------------------------------------------------------------------ Python-level writes

    def write(self, stream: str, text: str) -> None:
        pid = current_prediction.get()
        with self._lock:
            self._drain_locked()
            owner = self._owner(pid)
            key = (owner, stream)
            buf = self._partial.pop(key, "") + text
            cut = buf.rfind("\n") + 1
            if cut == 0 and len(buf) < _MAX_PARTIAL:
                self._partial[key] = buf
                return
            if cut == 0:
                cut = len(buf)
            if cut < len(buf):
                self._partial[key] = buf[cut:]
            self._emit_locked(owner, buf[:cut], stream)

    def flush(self, stream: str) -> None:
        pid = current_prediction.get()
        with self._lock:
            owner = self._owner(pid)
            text = self._partial.pop((owner, stream), None)
            if text:
                self._emit_locked(owner, text, stream)

    # ------------------------------------------------------------------ internals (lock held)

    def _owner(self, pid: str | None) -> str | None:
        if pid is not None and pid in self._active:
            return pid
        if len(self._active) == 1:
            return next(iter(self._active))
        return None

    def _emit_locked(self, owner: str | None, text: str, stream: str) -> None:
        # A held partial line of the other stream was written first: keep the order.
        other = self._partial.pop((owner, _OTHER[stream]), None)
        if other:
            self._emit(owner, other, _OTHER[stream])
        self._emit(owner, text, stream)

    def _drain_locked(self) -> None:
        for pipe in self._pipes:
            chunks = []
            while True:
                try:
                    data = os.read(pipe.fd, 65536)
                except BlockingIOError:
                    break
                if not data:
                    break
                chunks.append(data)
            if chunks:
                text = pipe.decoder.decode(b"".join(chunks))
                if text:
                    owner = self._owner(None)
                    held = self._partial.pop((owner, pipe.stream), None)
                    if held:
                        text = held + text
                    self._emit_locked(owner, text, pipe.stream)

    def _pump(self) -> None:
        poller = select.poll()
        for pipe in self._pipes:
            poller.register(pipe.fd, select.POLLIN)
        try:
            while True:
                poller.poll()
                with self._lock:
                    self._drain_locked()
        except Exception:  # noqa: BLE001 - the parent is gone; nothing left to report to
            os._exit(0)


class _RoutedBuffer:
    """``sys.stdout.buffer``: bytes written here join the text route."""

    def __init__(self, owner: RoutedStream) -> None:
        self._owner = owner
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes) -> int:
        text = self._decoder.decode(bytes(data))
        if text:
            self._owner.write(text)
        return len(data)

    def flush(self) -> None:
        self._owner.flush()

    def fileno(self) -> int:
        return self._owner.fileno()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False


class RoutedStream(io.TextIOBase):
    """Replacement for sys.stdout / sys.stderr in the child."""

    encoding = "utf-8"
    errors = "replace"
    line_buffering = True

    def __init__(self, capture: OutputCapture, stream: str, fd: int) -> None:
        super().__init__()
        self._capture = capture
        self._stream = stream
        self._fd = fd
        self._buffer = _RoutedBuffer(self)

    @property
    def buffer(self) -> _RoutedBuffer:  # type: ignore[override]
        return self._buffer

    @property
    def name(self) -> str:
        return f"<{self._stream}>"

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if s:
            self._capture.write(self._stream, s)
            hook = self._capture.after_write
            if hook is not None:
                hook()
        return len(s)

    def flush(self) -> None:
        self._capture.flush(self._stream)
        hook = self._capture.after_write
        if hook is not None:
            hook()

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def close(self) -> None:
        pass  # never closed: later output (and other libraries) still need it

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return False


def _line_buffer_libc_stdio() -> Callable[[Any], Any] | None:
    """Make libc's stdout line buffered (printf output shows up promptly, as on a
    terminal) and return ``fflush`` so the end of a prediction can flush the rest."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        fflush = libc.fflush
        fflush.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    try:
        libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        for name in ("stdout", "stderr"):
            libc.setvbuf(ctypes.c_void_p.in_dll(libc, name), None, _IOLBF, 0)
    except (ValueError, AttributeError):
        pass  # no such symbol (not glibc/musl): fflush at the end still works
    return fflush
