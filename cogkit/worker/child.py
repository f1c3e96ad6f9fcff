"""The child process that runs a predictor: load it, run setup() once, then predictions.

Started by ``cogkit.worker.client.Worker`` as
``python -c "from cogkit.worker.child import main; main()" <socket fd>``; it talks to
the parent only through that socket (``protocol`` messages). Its stdout/stderr are
captured (``_capture``) and sent as Log events; the original stderr is kept for
faulthandler, so a segfault's traceback still reaches the parent.

Threads: the main thread runs setup and predictions (sync predictors run on it, so a
cancel signal interrupts even ``time.sleep``; async predictors run on an asyncio loop
on it); the "cogkit-control" thread reads the parent's messages; "cogkit-output"
drains the stdout/stderr pipes.

Imports stay light (no pydantic/fastapi/httpx, asyncio only for async predictors):
the child's start-up time is part of every cold start.
"""

from __future__ import annotations

import inspect
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cogkit.exceptions import CancelationException, CogkitError
from cogkit.scope import scope
from cogkit.worker import _capture, _framing
from cogkit.worker._capture import OutputCapture, current_prediction
from cogkit.worker._values import InputConverter, to_wire
from cogkit.worker.protocol import (
    PROTOCOL_VERSION,
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

CANCEL_SIGNAL = signal.SIGUSR1
SYNC_CONCURRENCY_ERROR = "COG_MAX_CONCURRENCY > 1 requires an async run() or predict() method"
# A cancel signal landing while these modules run (mid-frame on the socket, inside
# the capture lock) is not raised there but deferred: to the end of the write or send
# (``_raise_deferred_cancel``), or to the canceller's next signal.
_CRITICAL_MODULES = frozenset({_framing.__name__, _capture.__name__})
_COGKIT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _user_traceback(exc: BaseException) -> str:
    """exc's traceback from the first frame that is not cogkit's or the import system's.
    Errors cogkit itself reports (bad signatures, bad refs) need no traceback."""
    if isinstance(exc, CogkitError):
        return f"{_error_text(exc)}\n"
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not (filename.startswith(_COGKIT_DIR) or filename.startswith("<frozen importlib")):
            break
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _print_traceback(exc: BaseException) -> None:
    sys.stderr.write(_user_traceback(exc))
    sys.stderr.flush()


@dataclass
class LoadedPredictor:
    info: Any  # cogkit.signature.PredictorInfo
    instance: Any  # the Predictor instance, or the function itself
    fn: Callable[..., Any]  # what runs one prediction
    converter: InputConverter
    max_concurrency: int


def load(hello: Hello) -> tuple[LoadedPredictor, Loaded]:
    """Import the predictor, inspect it and build the Loaded message."""
    from cogkit.loader import PredictorRef, instantiate, load_target
    from cogkit.schema import openapi_document
    from cogkit.signature import inspect_predictor

    ref = PredictorRef.parse(hello.ref)
    sys.argv = [ref.file]
    target = load_target(ref, hello.project_dir)
    info = inspect_predictor(target, hello.mode)
    schema = openapi_document(info)
    instance = instantiate(target)
    fn = getattr(instance, info.method) if isinstance(target, type) else target
    max_concurrency = hello.max_concurrency or info.concurrency or 1
    loaded = Loaded(
        schema=schema,
        is_async=info.is_async,
        max_concurrency=max_concurrency,
        streaming=info.streaming,
        output_iterator=info.output.iterator,
        has_healthcheck=info.has_healthcheck,
    )
    return LoadedPredictor(info, instance, fn, InputConverter(info, fn), max_concurrency), loaded


class Runner:
    """What sync and async runners share: setup arguments, input/output handling,
    healthchecks and the terminal-event bookkeeping."""

    def __init__(self, p: LoadedPredictor, conn: _framing.ChildConnection, capture: OutputCapture, hello: Hello):
        self.p = p
        self.conn = conn
        self.capture = capture
        self.hello = hello
        self.setup_finished = False

    # ------------------------------------------------------------------ setup

    def _setup_call(self) -> Any:
        setup = getattr(self.p.instance, "setup", None) if not self.p.info.is_function else None
        if setup is None:
            return None
        if self.p.info.setup_takes_weights:
            return setup(weights=self.hello.weights)
        return setup()

    def _setup_result(self, exc: BaseException | None) -> None:
        if exc is not None:
            message = SetupDone(ok=False, error=_error_text(exc), traceback=_user_traceback(exc))
        else:
            message = SetupDone(ok=True)
        self.capture.end(None)
        self.conn.send(message)
        self.setup_finished = True

    def _setup_refused(self, error: str) -> None:
        self.capture.end(None)
        self.conn.send(SetupDone(ok=False, error=error))
        self.setup_finished = True

    # ------------------------------------------------------------------ predictions

    def _metric_sink(self, pid: str) -> Callable[[str, Any, str], None]:
        def sink(name: str, value: Any, mode: str) -> None:
            self.conn.send(Metric(pid, name, to_wire(value), mode))
            self._raise_deferred_cancel()

        return sink

    def _raise_deferred_cancel(self) -> None:
        """Sync runner: raise a cancel that arrived while cogkit code held a lock."""

    def _is_iterator_output(self, result: Any) -> bool:
        return self.p.info.output.iterator or inspect.isgenerator(result)

    def _send_output(self, pid: str, item: Any) -> None:
        value = to_wire(item)
        self.capture.drain()
        self.conn.send(Output(pid, value))
        self._raise_deferred_cancel()

    def _finish(self, pid: str, outcome: Any, opened: list[Any]) -> None:
        for obj in opened:
            try:
                obj.close()
            except Exception:  # noqa: BLE001, S110 - closing a user's input file is best effort
                pass
        self.capture.end(pid)
        self.conn.send(outcome)

    # ------------------------------------------------------------------ healthcheck

    def healthcheck(self, hid: str) -> None:
        hook = None if self.p.info.is_function else getattr(self.p.instance, "healthcheck", None)
        if hook is None:
            self.conn.send(HealthResult(hid, True))
            return
        threading.Thread(target=self._health_in_thread, args=(hid, hook), daemon=True).start()

    def _health_in_thread(self, hid: str, hook: Callable[[], Any]) -> None:
        try:
            result = hook()
            if inspect.isawaitable(result):
                import asyncio

                result = asyncio.run(_awaited(result))
        except Exception as exc:  # noqa: BLE001 - any failure is reported as unhealthy
            self.send_health(hid, None, exc)
            return
        self.send_health(hid, result, None)

    def send_health(self, hid: str, result: Any, exc: BaseException | None) -> None:
        if exc is not None:
            self.conn.send(HealthResult(hid, False, f"Healthcheck failed: {exc}"))
        elif result is not None and not result:
            # None counts as healthy: a hook that "returns nothing" did not report a problem.
            self.conn.send(HealthResult(hid, False, "Healthcheck failed: user-defined healthcheck returned False"))
        else:
            self.conn.send(HealthResult(hid, True))

    # ------------------------------------------------------------------ to implement

    def run(self) -> int:
        raise NotImplementedError

    def submit(self, job: Predict) -> None:
        raise NotImplementedError

    def cancel(self, pid: str) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class SyncRunner(Runner):
    """One prediction at a time on the main thread; cancel = CANCEL_SIGNAL to it."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._jobs: queue.SimpleQueue[Predict | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._cancel_ids: set[str] = set()
        self._current: str | None = None
        self._delivered: str | None = None
        self._deferred: str | None = None
        self._main_ident = threading.main_thread().ident
        self.capture.after_write = self._raise_deferred_cancel

    def run(self) -> int:
        if self.p.max_concurrency > 1:
            self._setup_refused(SYNC_CONCURRENCY_ERROR)
            return 1
        try:
            result = self._setup_call()
            if inspect.isawaitable(result):
                import asyncio

                asyncio.run(_awaited(result))
        except BaseException as exc:  # noqa: BLE001 - SystemExit in setup is a setup failure too
            self._setup_result(exc)
            return 1
        self._setup_result(None)
        signal.signal(CANCEL_SIGNAL, self._on_cancel_signal)
        while True:
            job = self._jobs.get()
            if job is None:
                return 0
            self._predict(job)

    def submit(self, job: Predict) -> None:
        with self._lock:
            # A cancel that raced the end of an earlier run with this id (checked while
            # it was current, recorded just after) must not cancel this one.
            self._cancel_ids.discard(job.id)
            self._pending.add(job.id)
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)

    def cancel(self, pid: str) -> None:
        with self._lock:
            if pid != self._current and pid not in self._pending:
                return  # already finished (a late cancel must not hit a later run with the same id)
            self._cancel_ids.add(pid)
        if self._current == pid:
            threading.Thread(target=self._signal_until_delivered, args=(pid,), daemon=True).start()

    def _signal_until_delivered(self, pid: str) -> None:
        while self._current == pid and self._delivered != pid:
            signal.pthread_kill(self._main_ident, CANCEL_SIGNAL)  # type: ignore[arg-type]
            time.sleep(0.02)

    def _on_cancel_signal(self, signum: int, frame: Any) -> None:
        pid = self._current
        if pid is None or pid not in self._cancel_ids or self._delivered == pid:
            return
        f = frame
        while f is not None:
            if f.f_globals.get("__name__") in _CRITICAL_MODULES:
                self._deferred = pid
                return
            f = f.f_back
        self._delivered = pid
        raise CancelationException()

    def _raise_deferred_cancel(self) -> None:
        pid = self._deferred
        if pid is None or threading.get_ident() != self._main_ident:
            return
        self._deferred = None
        if pid == self._current and pid in self._cancel_ids and self._delivered != pid:
            self._delivered = pid
            raise CancelationException()

    def _predict(self, job: Predict) -> None:
        pid = job.id
        started = time.perf_counter()
        token = current_prediction.set(pid)
        self.capture.begin(pid)
        opened: list[Any] = []
        result: Any = None
        outcome: Any
        try:
            try:
                self._delivered = self._deferred = None
                with self._lock:
                    self._pending.discard(pid)
                    self._current = pid
                if pid in self._cancel_ids:  # canceled while still queued
                    self._delivered = pid
                    raise CancelationException()
                kwargs, opened = self.p.converter.convert(job.inputs)
                output = None
                with scope(sink=self._metric_sink(pid), context=job.context):
                    result = self.p.fn(**kwargs)
                    if self._is_iterator_output(result):
                        for item in result:
                            self._send_output(pid, item)
                    else:
                        output = to_wire(result)
            finally:
                self._current = None
            outcome = Done(pid, output, time.perf_counter() - started)
        except CancelationException:
            self._current = None
            outcome = Canceled(pid, time.perf_counter() - started)
        except BaseException as exc:  # noqa: BLE001 - sys.exit() in predict fails only the prediction
            self._current = None
            _print_traceback(exc)
            outcome = Failed(pid, _error_text(exc), time.perf_counter() - started)
        self._cancel_ids.discard(pid)
        if inspect.isgenerator(result):
            result.close()  # runs the generator's finally blocks after a cancel or failure
        self._finish(pid, outcome, opened)
        current_prediction.reset(token)


class AsyncRunner(Runner):
    """Predictions as tasks on one asyncio loop (the one setup() ran on)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        import asyncio

        self._asyncio = asyncio
        self._loop: Any = None
        self._stopped: Any = None
        self._tasks: dict[str, Any] = {}

    def run(self) -> int:
        return self._asyncio.run(self._main())

    async def _main(self) -> int:
        self._loop = self._asyncio.get_running_loop()
        self._stopped = self._asyncio.Event()
        try:
            result = self._setup_call()
            if inspect.isawaitable(result):
                await result
        except BaseException as exc:  # noqa: BLE001
            self._setup_result(exc)
            return 1
        self._setup_result(None)
        await self._stopped.wait()
        for task in list(self._tasks.values()):
            task.cancel()
        if self._tasks:
            await self._asyncio.wait(list(self._tasks.values()), timeout=5)
        return 0

    def submit(self, job: Predict) -> None:
        self._loop.call_soon_threadsafe(self._start, job)

    def _start(self, job: Predict) -> None:
        task = self._loop.create_task(self._predict(job))
        self._tasks[job.id] = task
        task.add_done_callback(lambda t, pid=job.id: self._canceled_before_start(t, pid))

    def _canceled_before_start(self, task: Any, pid: str) -> None:
        # A task canceled before its first step never runs its coroutine's body (the
        # CancelledError is thrown in before the first line), so _predict could not
        # send the terminal event: send it here. A task that did start catches
        # CancelledError itself and ends normally, so it is not ``cancelled()``.
        if task.cancelled():
            self._tasks.pop(pid, None)
            self._finish(pid, Canceled(pid, 0.0), [])

    def cancel(self, pid: str) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel, pid)

    def _cancel(self, pid: str) -> None:
        task = self._tasks.get(pid)
        if task is not None:
            task.cancel()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)

    def healthcheck(self, hid: str) -> None:
        hook = None if self.p.info.is_function else getattr(self.p.instance, "healthcheck", None)
        if hook is not None and inspect.iscoroutinefunction(hook) and self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._health_on_loop(hid, hook)))
            return
        super().healthcheck(hid)

    async def _health_on_loop(self, hid: str, hook: Callable[[], Any]) -> None:
        try:
            result = await hook()
        except Exception as exc:  # noqa: BLE001
            self.send_health(hid, None, exc)
            return
        self.send_health(hid, result, None)

    async def _predict(self, job: Predict) -> None:
        pid = job.id
        started = time.perf_counter()
        current_prediction.set(pid)  # this task's own context copy
        self.capture.begin(pid)
        opened: list[Any] = []
        outcome: Any
        try:
            kwargs, opened = self.p.converter.convert(job.inputs)
            output = None
            with scope(sink=self._metric_sink(pid), context=job.context):
                result = self.p.fn(**kwargs)
                if inspect.isawaitable(result):
                    result = await result
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        self._send_output(pid, item)
                elif self._is_iterator_output(result):
                    for item in result:
                        self._send_output(pid, item)
                else:
                    output = to_wire(result)
            outcome = Done(pid, output, time.perf_counter() - started)
        except self._asyncio.CancelledError:
            outcome = Canceled(pid, time.perf_counter() - started)
        except BaseException as exc:  # noqa: BLE001
            _print_traceback(exc)
            outcome = Failed(pid, _error_text(exc), time.perf_counter() - started)
        self._tasks.pop(pid, None)
        self._finish(pid, outcome, opened)


def _control_loop(conn: _framing.ChildConnection, runner: Runner, diag: Any) -> None:
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the parent is gone: nobody to serve
        except Exception as exc:  # noqa: BLE001 - a corrupt frame: give up, the parent restarts us
            diag.write(f"cogkit worker: bad message from parent: {exc!r}\n")
            os._exit(3)
        if isinstance(msg, Predict):
            runner.submit(msg)
        elif isinstance(msg, Cancel):
            runner.cancel(msg.id)
        elif isinstance(msg, Healthcheck):
            runner.healthcheck(msg.id)
        elif isinstance(msg, Shutdown):
            if not runner.setup_finished:
                os._exit(0)  # setup cannot be interrupted cleanly
            runner.stop()


def _after_fork(conn: _framing.ChildConnection) -> None:
    """In a process the predictor forked (multiprocessing, DataLoader workers): plain
    files on fds 1/2, which are the capture pipes, so its output is still captured, as
    C-level output; and no use of the socket, which belongs to the worker."""
    conn.disable()
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def _exit(code: int) -> None:
    """Leave without joining user threads (a stuck thread must not keep the worker alive)."""
    import atexit

    try:
        atexit._run_exitfuncs()
    finally:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:  # noqa: BLE001, S110
                pass
        os._exit(code)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    fd = int(argv[1])
    os.set_inheritable(fd, False)  # subprocesses of the predictor must not get the socket
    sock = socket.socket(fileno=fd)
    # The parent's stderr, kept apart from the captured fd 2: faulthandler writes a
    # crash's traceback there, and internal errors go there.
    diag = os.fdopen(os.dup(2), "w", buffering=1)
    import faulthandler

    faulthandler.enable(file=diag, all_threads=False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    conn = _framing.ChildConnection(sock)
    try:
        hello = conn.recv()
    except (EOFError, OSError):
        os._exit(0)
    if not isinstance(hello, Hello) or hello.version != PROTOCOL_VERSION:
        got = getattr(hello, "version", type(hello).__name__)
        conn.send(LoadFailed(error=f"RuntimeError: worker protocol version {PROTOCOL_VERSION}, parent sent {got}"))
        os._exit(2)

    capture = OutputCapture(lambda pid, text, stream: conn.send(Log(pid, text, stream)))
    capture.install()
    os.register_at_fork(after_in_child=lambda: _after_fork(conn))
    try:
        predictor, loaded = load(hello)
    except BaseException as exc:  # noqa: BLE001 - import errors, bad signatures, SystemExit
        capture.end(None)
        conn.send(LoadFailed(error=_error_text(exc), traceback=_user_traceback(exc)))
        _exit(1)
        return
    conn.send(loaded)
    runner_cls = AsyncRunner if predictor.info.is_async else SyncRunner
    runner = runner_cls(predictor, conn, capture, hello)
    threading.Thread(target=_control_loop, args=(conn, runner, diag), name="cogkit-control", daemon=True).start()
    _exit(runner.run())


if __name__ == "__main__":
    main()
