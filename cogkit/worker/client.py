"""The parent side of the worker: spawn the child, drive predictions, restart it after a crash.

One Worker owns one child process at a time (``cogkit.worker.child``). The server and
``cogkit predict`` program against this class only; they never import the user's
module, so nothing the model does can take them down.

Guarantees callers rely on:

* Each prediction yields Log/Output/Metric events and then exactly ONE terminal event
  (Done/Failed/Canceled); every Log of that prediction comes before its terminal.
* The prediction's slot is free again (``free_slots``) before its terminal event is
  handed to the consumer, so a caller that starts the next prediction right after
  seeing a terminal event never gets WorkerBusy.
* A child that dies (exception escaping, ``os._exit``, a signal, OOM kill), sends
  garbage or ignores a cancel for ``cancel_grace`` seconds fails its in-flight
  predictions with a clear error and is replaced by a new child (state STARTING, then
  READY). A failed restart leaves the Worker DEFUNCT; a failed first setup leaves it
  SETUP_FAILED.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cogkit.worker._framing import HEADER, MAX_FRAME, ProtocolError, decode_from_child, encode
from cogkit.worker.protocol import (
    Cancel,
    Canceled,
    Done,
    Failed,
    HealthResult,
    Healthcheck,
    Hello,
    Loaded,
    LoadFailed,
    Log,
    Metric,
    Output,
    Predict,
    SetupDone,
    Shutdown,
)

STARTING, READY, SETUP_FAILED, DEFUNCT, STOPPED = "STARTING", "READY", "SETUP_FAILED", "DEFUNCT", "STOPPED"
State = Literal["STARTING", "READY", "SETUP_FAILED", "DEFUNCT", "STOPPED"]

_CHILD_CODE = "from cogkit.worker.child import main; main()"
_DIAG_KEEP = 65536  # bytes of the child's raw stderr kept for crash reports


class WorkerError(Exception):
    """Base class of the errors Worker.predict raises."""


class WorkerBusy(WorkerError):
    """Every slot is taken (the server answers 409)."""


class WorkerNotReady(WorkerError):
    """The worker is not READY (starting, restarting, failed or stopped)."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass
class SetupInfo:
    """The current child's setup. ``logs`` grows while setup runs; on failure it ends
    with the error's traceback (or the error line), and ``error`` holds
    "<ExceptionType>: <message>" (or the crash / timeout description)."""

    started_at: datetime.datetime
    completed_at: datetime.datetime | None = None
    status: Literal["starting", "succeeded", "failed"] = "starting"
    logs: str = ""
    error: str | None = None


class PredictionHandle:
    """Events of one prediction: ``async for ev in handle``. Iteration ends after the
    terminal event; ``terminal`` holds it once it has arrived."""

    def __init__(self, pid: str, child: _Child) -> None:
        self.id = pid
        self.terminal: Done | Failed | Canceled | None = None
        self.cancel_requested = False
        self._child = child
        self._events: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._escalation: asyncio.TimerHandle | None = None
        self._started = time.perf_counter()

    def _push(self, event: Any) -> None:
        self._events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self, event: Done | Failed | Canceled) -> None:
        if self._escalation is not None:
            self._escalation.cancel()
        self.terminal = event
        self._push(event)

    def __aiter__(self) -> PredictionHandle:
        return self

    async def __anext__(self) -> Any:
        while not self._events:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._events.popleft()
        if event is self.terminal:
            self._ended = True
        return event


class _Child:
    """One child process: its connection, tasks and what we know about its end."""

    def __init__(self, proc: asyncio.subprocess.Process, writer: asyncio.StreamWriter, first: bool) -> None:
        self.proc = proc
        self.writer = writer
        self.first = first
        self.loaded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.setup_finished = False
        self.exit_reason: str | None = None  # set when we end it on purpose
        self.killed_for_cancel = False
        self.diag = bytearray()
        self.diag_sent = 0
        self.read_task: asyncio.Task[None] | None = None
        self.diag_task: asyncio.Task[None] | None = None
        self.setup_timer: asyncio.TimerHandle | None = None

    def send(self, message: Any) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(message))

    def kill(self) -> None:
        """SIGKILL the child and everything it started (its own process group)."""
        for target in (lambda: os.killpg(self.proc.pid, signal.SIGKILL), lambda: self.proc.kill()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                target()

    def new_diag(self) -> str:
        text = bytes(self.diag[self.diag_sent :]).decode(errors="replace")
        self.diag_sent = len(self.diag)
        return text


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Worker:
    """Runs a predictor in a child process; see the module docstring for guarantees.

    ``max_concurrency`` None means ``@concurrent(max=N)`` on the method, else 1 (callers
    pass COG_MAX_CONCURRENCY / cog.yaml ``concurrency.max`` explicitly). ``weights`` None
    means env COG_WEIGHTS. ``setup_timeout`` counts from spawning the child.
    ``cancel_grace``: seconds a canceled prediction may keep running (e.g. stuck in C
    code that never returns to Python) before the child is killed and restarted.
    ``echo_logs`` copies everything the child prints to this process's stderr.
    """

    def __init__(
        self,
        ref: str = "predict.py:Predictor",
        project_dir: str | os.PathLike[str] = ".",
        mode: Literal["predict", "train"] = "predict",
        weights: str | None = None,
        max_concurrency: int | None = None,
        setup_timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        restart_on_crash: bool = True,
        *,
        echo_logs: bool = False,
        cancel_grace: float = 5.0,
        python: str | None = None,
    ) -> None:
        if mode not in ("predict", "train"):
            raise ValueError(f"mode must be 'predict' or 'train', got {mode!r}")
        self.ref = ref
        self.project_dir = os.path.abspath(os.fspath(project_dir))
        self.mode = mode
        self.weights = weights
        self.setup_timeout = setup_timeout
        self.env = dict(env or {})
        self.restart_on_crash = restart_on_crash
        self.echo_logs = echo_logs
        self.cancel_grace = cancel_grace
        self.python = python or sys.executable
        self._requested_concurrency = max_concurrency

        self.state: State = STARTING
        self.loaded: Loaded | None = None
        self.setup = SetupInfo(started_at=_now())
        self.restarts = 0  # children started after a crash

        self._started = False
        self._stopping = False
        self._child: _Child | None = None
        self._inflight: dict[str, PredictionHandle] = {}
        self._idle = asyncio.Event()
        self._setup_event = asyncio.Event()
        self._health: dict[str, asyncio.Future[HealthResult]] = {}
        self._health_shared: asyncio.Future[HealthResult] | None = None
        self._restart_task: asyncio.Task[Any] | None = None

    # ------------------------------------------------------------------ public state

    @property
    def max_concurrency(self) -> int:
        if self.loaded is not None:
            return self.loaded.max_concurrency
        return self._requested_concurrency or 1

    @property
    def free_slots(self) -> int:
        return max(0, self.max_concurrency - len(self._inflight))

    @property
    def pid(self) -> int | None:
        """The child's process id (None when there is no child)."""
        return self._child.proc.pid if self._child is not None else None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Spawn the child; return once it loaded the predictor (``loaded`` is set) or
        failed to (state SETUP_FAILED). setup() goes on in the background: see
        ``wait_ready``."""
        if self._started:
            raise RuntimeError("Worker.start() may be called only once")
        self._started = True
        child = await self._spawn(first=True)
        if child is not None:
            await asyncio.shield(child.loaded)

    async def wait_ready(self) -> SetupInfo:
        """Wait until the current setup finished (succeeded or failed)."""
        while True:
            event = self._setup_event
            await event.wait()
            if event is self._setup_event:
                return self.setup

    async def shutdown(self, grace: float = 10.0) -> None:
        """Let in-flight predictions finish for up to ``grace`` seconds, cancel the rest,
        then stop the child. New predictions are refused from the start."""
        if self._stopping:
            return
        self._stopping = True
        if self._restart_task is not None and not self._restart_task.done():
            with contextlib.suppress(Exception):
                await self._restart_task
        if self._inflight:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        if self._inflight:
            for pid in list(self._inflight):
                await self.cancel(pid)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.cancel_grace + 2)
        child = self._child
        if child is not None:
            if child.proc.returncode is None:
                child.send(Shutdown())
                try:
                    await asyncio.wait_for(child.proc.wait(), 5.0)
                except asyncio.TimeoutError:
                    child.kill()
            if child.read_task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await child.read_task
        self.state = STOPPED
        self._setup_event.set()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.shutdown()

    # ------------------------------------------------------------------ predictions

    async def predict(
        self, id: str, inputs: Mapping[str, Any], context: Mapping[str, str] | None = None  # noqa: A002
    ) -> PredictionHandle:
        """Start a prediction; iterate the returned handle for its events."""
        handle = self.submit(id, inputs, context)
        writer = handle._child.writer
        if writer.transport.get_write_buffer_size() > (1 << 20):
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        return handle

    def submit(
        self, id: str, inputs: Mapping[str, Any], context: Mapping[str, str] | None = None  # noqa: A002
    ) -> PredictionHandle:
        """``predict`` without awaiting: the request is queued on the socket at once (no wait
        for a large input to be flushed). The HTTP server uses it to hand a prediction over
        in the same event-loop turn that admitted it."""
        child = self._child
        if self.state != READY or self._stopping or child is None:
            raise WorkerNotReady(f"the worker is not ready (state {self.state})")
        if id in self._inflight:
            raise ValueError(f"prediction {id!r} is already running")
        if len(self._inflight) >= self.max_concurrency:
            raise WorkerBusy("At capacity - all prediction slots busy")
        handle = PredictionHandle(id, child)
        self._inflight[id] = handle
        self._idle.clear()
        child.send(Predict(id, dict(inputs), dict(context or {})))
        return handle

    async def cancel(self, id: str) -> bool:  # noqa: A002
        """Ask the running prediction ``id`` to stop. True if it was in flight; its
        terminal event follows (Canceled, or Done if predict() swallowed the cancel)."""
        handle = self._inflight.get(id)
        if handle is None:
            return False
        if not handle.cancel_requested:
            handle.cancel_requested = True
            child = handle._child
            child.send(Cancel(id))
            handle._escalation = asyncio.get_running_loop().call_later(
                self.cancel_grace, self._cancel_overdue, child, id
            )
        return True

    def kill(self) -> None:
        """Stop the child now (SIGKILL, with everything it started), without waiting for
        a cancel to take effect: its in-flight predictions end Canceled if a cancel was
        requested, else Failed. It is restarted as after any crash."""
        child = self._child
        if child is not None and child.proc.returncode is None:
            child.killed_for_cancel = True
            child.exit_reason = child.exit_reason or "Worker was killed"
            child.kill()

    async def healthcheck(self, timeout: float = 5.0) -> tuple[bool, str | None]:
        """Run the predictor's healthcheck() hook: (healthy, Cog's error message).
        Concurrent callers share one run of the hook."""
        child = self._child
        if self.state != READY or child is None:
            raise WorkerNotReady(f"the worker is not ready (state {self.state})")
        if self.loaded is not None and not self.loaded.has_healthcheck:
            return True, None
        fut = self._health_shared
        if fut is None or fut.done():
            hid = uuid.uuid4().hex
            fut = asyncio.get_running_loop().create_future()
            self._health[hid] = fut
            self._health_shared = fut
            child.send(Healthcheck(hid))
        try:
            result = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            if self._health_shared is fut:  # a later caller starts a fresh run, not this stale one
                self._health_shared = None
            return False, f"Healthcheck failed: user-defined healthcheck timed out after {float(timeout)} seconds"
        return result.healthy, result.error

    # ------------------------------------------------------------------ child processes

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        return env

    def _begin_setup(self) -> None:
        self.state = STARTING
        self.setup = SetupInfo(started_at=_now())
        if self._setup_event.is_set():
            self._setup_event = asyncio.Event()

    async def _spawn(self, first: bool) -> _Child | None:
        if first:
            self._begin_setup()
        env = self._child_env()
        weights = self.weights if self.weights is not None else env.get("COG_WEIGHTS")
        if weights:  # a train()/predict() function has no setup(weights=): it reads the variable
            env["COG_WEIGHTS"] = weights
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.python,
                "-c",
                _CHILD_CODE,
                str(child_sock.fileno()),
                pass_fds=(child_sock.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.project_dir,
                env=env,
                start_new_session=True,  # its own process group: a kill takes its subprocesses too
            )
        except OSError as exc:
            parent_sock.close()
            self._setup_failed_without_child(first, f"could not start the worker process: {exc}")
            return None
        finally:
            child_sock.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_sock, limit=1 << 20)
        child = _Child(proc, writer, first)
        self._child = child
        child.send(
            Hello(
                ref=self.ref,
                project_dir=self.project_dir,
                mode=self.mode,
                weights=weights,
                max_concurrency=self._requested_concurrency,
            )
        )
        child.read_task = asyncio.create_task(self._read_loop(child, reader))
        child.diag_task = asyncio.create_task(self._read_diag(child))
        if self.setup_timeout:
            child.setup_timer = asyncio.get_running_loop().call_later(
                self.setup_timeout, self._setup_overdue, child
            )
        return child

    async def _read_loop(self, child: _Child, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
                if size > MAX_FRAME:
                    raise ProtocolError(f"frame of {size} bytes")
                self._dispatch(child, decode_from_child(await reader.readexactly(size)))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the child closed its end: it exited or is exiting
        except ProtocolError as exc:
            child.exit_reason = child.exit_reason or f"Worker crashed (invalid message: {exc})"
            child.kill()
        except Exception as exc:  # noqa: BLE001 - never leave a child running unsupervised
            child.exit_reason = child.exit_reason or f"Worker crashed (internal error: {exc!r})"
            child.kill()
        await self._child_exited(child)

    async def _read_diag(self, child: _Child) -> None:
        stream = child.proc.stderr
        assert stream is not None
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                return
            child.diag += chunk
            if len(child.diag) > 2 * _DIAG_KEEP:
                drop = len(child.diag) - _DIAG_KEEP
                del child.diag[:drop]
                child.diag_sent = max(0, child.diag_sent - drop)
            if self.echo_logs:
                sys.stderr.write(chunk.decode(errors="replace"))
                sys.stderr.flush()

    def _dispatch(self, child: _Child, msg: Any) -> None:
        kind = type(msg)
        if kind is Log:
            if self.echo_logs:
                sys.stderr.write(msg.text)
                sys.stderr.flush()
            if msg.id is None:
                if not child.setup_finished and child is self._child:
                    self.setup.logs += msg.text
                return
            handle = self._inflight.get(msg.id)
            if handle is not None and handle._child is child:
                handle._push(msg)
        elif kind is Output or kind is Metric:
            handle = self._inflight.get(msg.id)
            if handle is not None and handle._child is child:
                handle._push(msg)
        elif kind is Done or kind is Failed or kind is Canceled:
            handle = self._inflight.get(msg.id)
            if handle is None or handle._child is not child:
                return
            del self._inflight[msg.id]  # the slot is free before anyone sees the terminal event
            if not self._inflight:
                self._idle.set()
            handle._finish(msg)
        elif kind is HealthResult:
            fut = self._health.pop(msg.id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif kind is Loaded:
            self.loaded = msg
            if not child.loaded.done():
                child.loaded.set_result(None)
        elif kind is SetupDone:
            self._setup_finished(child, msg.ok, msg.error, msg.traceback)
        elif kind is LoadFailed:
            self._setup_finished(child, False, msg.error, msg.traceback)
        else:
            raise ProtocolError(f"unexpected {kind.__name__} from the worker")

    def _setup_finished(self, child: _Child, ok: bool, error: str | None, tb: str = "") -> None:
        if child.setup_finished:
            return
        child.setup_finished = True
        if child.setup_timer is not None:
            child.setup_timer.cancel()
        if not child.loaded.done():
            child.loaded.set_result(None)
        if child is not self._child:
            return
        setup = self.setup
        setup.completed_at = _now()
        if ok:
            setup.status = "succeeded"
            self.state = READY
        else:
            detail = tb or f"{error}\n"
            if setup.logs and not setup.logs.endswith("\n"):
                setup.logs += "\n"
            setup.logs += detail
            setup.status = "failed"
            setup.error = error
            self.state = SETUP_FAILED if child.first else DEFUNCT
            # the child exits on its own after a failed setup; make sure of it
            asyncio.get_running_loop().call_later(5.0, self._kill_if_alive, child)
        self._setup_event.set()

    def _setup_failed_without_child(self, first: bool, error: str) -> None:
        self.setup.completed_at = _now()
        self.setup.status = "failed"
        self.setup.error = error
        self.setup.logs += error + "\n"
        self.state = SETUP_FAILED if first else DEFUNCT
        self._setup_event.set()

    @staticmethod
    def _kill_if_alive(child: _Child) -> None:
        if child.proc.returncode is None:
            child.kill()

    def _setup_overdue(self, child: _Child) -> None:
        if not child.setup_finished and child.proc.returncode is None:
            child.exit_reason = f"setup timed out after {self.setup_timeout} seconds"
            child.kill()

    def _cancel_overdue(self, child: _Child, pid: str) -> None:
        handle = self._inflight.get(pid)
        if handle is None or handle._child is not child or child.proc.returncode is not None:
            return
        child.killed_for_cancel = True
        child.exit_reason = (
            f"Worker restarted: prediction {pid} did not stop within {self.cancel_grace} s of being canceled"
        )
        child.kill()

    async def _child_exited(self, child: _Child) -> None:
        """The child's connection closed: reap it, settle its work, restart if due."""
        if child.setup_timer is not None:
            child.setup_timer.cancel()
        if child.proc.returncode is None:
            try:
                await asyncio.wait_for(child.proc.wait(), 2.0)
            except asyncio.TimeoutError:
                child.kill()  # it closed the socket but lingers
                await child.proc.wait()
        if child.diag_task is not None:
            # its last words (a faulthandler traceback) may still be in the pipe
            await asyncio.wait({child.diag_task}, timeout=0.5)
        child.writer.close()
        stopping = self._stopping
        crash = child.exit_reason or f"Worker crashed ({_describe_exit(child.proc.returncode)})"
        if stopping and child.exit_reason is None:
            crash = "Worker was shut down"
        diag = child.new_diag()

        for pid, handle in list(self._inflight.items()):
            if handle._child is not child:
                continue
            del self._inflight[pid]
            if diag:
                handle._push(Log(pid, diag, "stderr"))
            elapsed = time.perf_counter() - handle._started
            if handle.cancel_requested and (child.killed_for_cancel or stopping):
                handle._finish(Canceled(pid, elapsed))
            else:
                handle._finish(Failed(pid, crash, elapsed))
        if not self._inflight:
            self._idle.set()
        for hid, fut in list(self._health.items()):
            if not fut.done():
                fut.set_result(HealthResult(hid, False, f"Healthcheck failed: {crash}"))
        self._health.clear()

        if child is not self._child:
            return
        if not child.setup_finished:
            if child.exit_reason:
                reason = child.exit_reason
            elif stopping:
                reason = "Worker was shut down during setup"
            else:
                reason = f"Worker crashed during setup ({_describe_exit(child.proc.returncode)})"
            if diag:
                self.setup.logs += diag
            self._setup_finished(child, False, reason)
        if stopping:
            self.state = STOPPED
            self._child = None
            return
        if self.state in (SETUP_FAILED, DEFUNCT):
            return  # the expected exit after a failed setup
        if not self.restart_on_crash:
            self.state = DEFUNCT
            return
        self.restarts += 1
        self._begin_setup()  # now, not when the task first runs: predict() must refuse
        self._restart_task = asyncio.create_task(self._spawn(first=False))
