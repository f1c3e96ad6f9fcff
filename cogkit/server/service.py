"""The prediction service: admission, running predictions on the worker, cancel, shutdown.

The routes (app.py) turn requests into calls here and results into bodies;
everything about a prediction's life lives here and in prediction.py.

Order of checks for a new prediction (as coglet): the server must be ready (503),
the input must validate (422), a slot must be free (409, or a place in the
``--queue``). A prediction leaves the in-flight table and gives its slot back in
the same step that makes it terminal, before any response or webhook is sent.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cogkit._version import COG_COMPAT_VERSION, __version__
from cogkit.openapi import Interface
from cogkit.server.httpio import json_response
from cogkit.server.outputs import OutputEncoder
from cogkit.server.prediction import Prediction, echo_input, new_prediction_id, now_iso
from cogkit.server.settings import Settings, worker_from
from cogkit.server.slots import AtCapacity, Slots
from cogkit.server.sse import EventStream, prediction_listener
from cogkit.server.uploads import Uploader, UploadError
from cogkit.server.webhooks import EVENTS, WebhookSender
from cogkit.worker import protocol as P

if TYPE_CHECKING:
    import httpx

    from cogkit.validation import InputValidator
    from cogkit.worker.client import Worker

log = logging.getLogger("cogkit.server")

NOT_READY = "Setup has not finished yet. Wait until it has finished, or GET /health-check for status."
AT_CAPACITY = "At capacity - all prediction slots busy"
SHUTTING_DOWN = "The server is shutting down."
HEALTHCHECK_PREFIX = "Healthcheck failed: "


class Refusal(Exception):
    """A request the service will not run; ``response`` is the HTTP answer."""

    def __init__(self, status: int, body: dict[str, Any] | None = None, *, response: Any = None) -> None:
        super().__init__(status)
        self.response = response if response is not None else json_response(status, body)


# Encoded once: a busy server answers these many times a second.
_AT_CAPACITY = json_response(409, {"error": AT_CAPACITY, "status": "failed"})
_NOT_READY = json_response(503, {"error": NOT_READY, "status": "failed"})
_SHUTTING_DOWN = json_response(503, {"error": SHUTTING_DOWN, "status": "failed"})


def _invalid(loc: list[str], msg: str) -> Refusal:
    return Refusal(422, {"detail": [{"loc": loc, "msg": msg, "type": "value_error"}]})


@dataclass
class CreateRequest:
    """The envelope of POST/PUT /predictions (everything but the input values)."""

    id: str | None
    input: Any
    webhook: str | None
    events_filter: frozenset[str] | None
    context: dict[str, str]


def parse_create(body: Any, path_id: str | None, noun: str = "prediction") -> CreateRequest:
    """Check the request envelope; raise Refusal(422) naming the field and the rule."""
    from cogkit.validation import json_repr

    if not isinstance(body, dict):
        raise _invalid(["body"], f"{json_repr(body)} is not of type \"object\"")
    pid = body.get("id")
    if pid is not None and not isinstance(pid, str):
        raise _invalid(["body", "id"], f"{json_repr(pid)} is not of type \"string\"")
    if path_id is not None:
        if pid is not None and pid != path_id:
            raise _invalid(["body", "id"], f"{noun} ID must match the ID supplied in the URL")
        pid = path_id
    if pid is not None and not pid:
        raise _invalid(["body", "id"], f"{noun} ID must not be empty")
    webhook = body.get("webhook")
    if webhook is not None:
        if not isinstance(webhook, str):
            raise _invalid(["body", "webhook"], f"{json_repr(webhook)} is not of type \"string\"")
        if not _is_http_url(webhook):
            raise _invalid(["body", "webhook"], f"{json_repr(webhook)} is not an http(s) URL")
    events = body.get("webhook_events_filter")
    events_filter: frozenset[str] | None = None
    if events is not None:
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise _invalid(["body", "webhook_events_filter"], f"{json_repr(events)} is not an array of strings")
        bad = [e for e in events if e not in EVENTS]
        if bad:
            raise _invalid(
                ["body", "webhook_events_filter"],
                f"{json_repr(bad[0])} is not one of [\"start\",\"output\",\"logs\",\"completed\"]",
            )
        events_filter = frozenset(events)
    context = body.get("context")
    if context is None:
        context = {}
    elif not isinstance(context, dict) or not all(isinstance(v, str) for v in context.values()):
        raise _invalid(["body", "context"], f"{json_repr(context)} is not an object of strings")
    return CreateRequest(pid, body.get("input"), webhook, events_filter, dict(context))


def _is_http_url(value: str) -> bool:
    """An absolute http(s) URL with a host, a valid port and no whitespace or control
    characters (urlsplit raises on a bad IPv6 host, ``.port`` on an out-of-range port)."""
    if any(ch <= " " or ch == "\x7f" for ch in value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError when out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


@dataclass
class _Run:
    """What one prediction's run carries between its steps."""

    pred: Prediction
    handle: Any = None  # the worker's PredictionHandle once submitted
    workdir: str | None = None


class PredictionService:
    def __init__(self, settings: Settings, worker: Worker | None = None) -> None:
        self.settings = settings
        self.worker: Worker | None = worker
        self.loaded: P.Loaded | None = None
        self._setup_succeeded = False
        self.validator: InputValidator | None = None
        self.validator_built = asyncio.Event()  # set once the validator exists (or cannot)
        self.secrets: frozenset[str] = frozenset()
        self.file_fields: frozenset[str] = frozenset()
        self.streaming = False
        self.output_iterator = False
        self.slots = Slots(1, settings.queue)
        self.inflight: dict[str, Prediction] = {}
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._streams: dict[str, EventStream] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self.webhooks = WebhookSender(
            self.http_client,
            token=settings.webhook_token,
            throttle_interval=settings.throttle_interval,
            user_agent=f"cogkit/{__version__} (cog {COG_COMPAT_VERSION})",
        )
        uploader = Uploader(settings.upload_url, self.http_client) if settings.upload_url else None
        self.outputs = OutputEncoder(uploader)
        self.boot_error: str | None = None  # the worker could not even be created
        self.boot_lines: list[str] = [
            f"[cogkit] cogkit {__version__} (Cog {COG_COMPAT_VERSION} protocol)",
            f"[cogkit] python {platform.python_version()}",
            f"[cogkit] {settings.mode}er {settings.predictor_ref}" if settings.mode == "train"
            else f"[cogkit] predictor {settings.predictor_ref}",
        ]
        self.draining = False
        self.on_exit: Callable[[], None] | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._preload: asyncio.Future[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._workdir = tempfile.mkdtemp(prefix="cogkit-server-")
        self._created_at = now_iso()

    # ------------------------------------------------------------------ lifecycle

    def begin(self, starting: Awaitable[None] | None = None) -> None:
        """Start the worker, or follow one already started (``self.worker`` with its
        ``starting`` = ``worker.start()``); call on the running loop, returns at once."""
        if self._start_task is None:
            loop = asyncio.get_running_loop()
            self._start_task = loop.create_task(self._start(starting))
            # Import the validator's machinery (pydantic) while the child boots, not after.
            self._preload = loop.run_in_executor(None, _preload)

    async def _start(self, starting: Awaitable[None] | None) -> None:
        s = self.settings
        try:
            if self.worker is None:
                self.worker = worker_from(s)
            await (starting if starting is not None else self.worker.start())
        except Exception as exc:  # the worker reports setup failures through its state
            if self.worker is None:
                self.boot_error = f"{type(exc).__name__}: {exc}"
                log.error("could not start the worker: %s", self.boot_error)
                return
        loaded = self.worker.loaded
        if loaded is None:
            return  # load failed: SETUP_FAILED, reported by health
        self.loaded = loaded
        self.streaming = bool(loaded.streaming)
        self.output_iterator = bool(loaded.output_iterator)
        self.slots.resize(max(1, int(loaded.max_concurrency or 1)))
        interface = Interface.of(loaded.schema, s.mode)
        self.secrets = interface.secret_inputs
        self.file_fields = frozenset(interface.file_inputs)
        # The validator is built in a thread while setup() runs in the child; READY does
        # not wait for it (a request arriving first waits for it instead).
        loop = asyncio.get_running_loop()
        assert self._preload is not None
        await self._preload
        try:
            self.validator = await loop.run_in_executor(None, _build_validator, loaded.schema, s.mode)
        except Exception as exc:  # an invalid schema: nothing can be validated
            self.boot_error = f"cannot validate inputs with the predictor's schema: {type(exc).__name__}: {exc}"
            log.error("%s", self.boot_error)
            return
        finally:
            self.validator_built.set()
        try:
            await self.worker.wait_ready()
        except Exception:
            pass
        if self.worker.state == "READY":
            log.info("ready: %s", s.predictor_ref)
        self._warm_http()

    def _warm_http(self) -> None:
        # Import httpx off the request path so the first webhook or upload is not slowed.
        asyncio.get_running_loop().run_in_executor(None, __import__, "httpx")

    async def http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(30.0, connect=10.0),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            )
        return self._http

    # ------------------------------------------------------------------ status

    @property
    def schema(self) -> dict[str, Any] | None:
        """The OpenAPI document, served (like coglet) only once setup has succeeded."""
        if not self._setup_succeeded:
            if self.loaded is None or self.worker is None or self.worker.setup.status != "succeeded":
                return None
            self._setup_succeeded = True
        return self.loaded.schema if self.loaded is not None else None

    def worker_state(self) -> str:
        if self.boot_error is not None:
            return "SETUP_FAILED"
        if self.worker is None:
            return "STARTING"
        return self.worker.state

    def status(self) -> str:
        """Health status without the user healthcheck."""
        st = self.worker_state()
        if st == "READY":
            return "BUSY" if self.slots.full else "READY"
        if st in ("STARTING", "SETUP_FAILED", "DEFUNCT"):
            return st
        return "DEFUNCT"  # STOPPED or anything unexpected: not serving

    @property
    def ready(self) -> bool:
        return self.worker_state() == "READY" and self.validator is not None and not self.draining

    @property
    def validator_coming(self) -> bool:
        """The worker is READY and the validator is still being built: wait, do not refuse."""
        return self.validator is None and not self.validator_built.is_set() and self.worker_state() == "READY"

    @property
    def has_user_healthcheck(self) -> bool:
        return self.loaded is not None and bool(self.loaded.has_healthcheck)

    async def user_healthcheck(self) -> str | None:
        """None when healthy (or no healthcheck() is defined), else Cog's error text.
        The worker shares one run of the hook between concurrent callers."""
        worker = self.worker
        if self.loaded is None or not self.loaded.has_healthcheck or worker is None:
            return None
        try:
            healthy, error = await worker.healthcheck(self.settings.healthcheck_timeout)
        except Exception as exc:  # the worker went away meanwhile: status() will say so
            return f"{HEALTHCHECK_PREFIX}{exc}"
        if healthy:
            return None
        return error or f"{HEALTHCHECK_PREFIX}user-defined healthcheck returned False"

    def setup_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        setup = getattr(self.worker, "setup", None) if self.worker is not None else None
        started = _iso(getattr(setup, "started_at", None)) or self._created_at
        completed = _iso(getattr(setup, "completed_at", None))
        status = getattr(setup, "status", None) or "starting"
        logs = "\n".join(self.boot_lines) + "\n"
        if setup is not None and getattr(setup, "logs", ""):
            logs += setup.logs if setup.logs.endswith("\n") else setup.logs + "\n"
        if self.boot_error is not None:
            status = "failed"
            logs += f"[cogkit] worker failed to start: {self.boot_error}\n"
        info["started_at"] = started
        if completed is not None:
            info["completed_at"] = completed
        info["status"] = status
        info["logs"] = logs
        return info

    # ------------------------------------------------------------------ predictions

    def existing(self, pid: str) -> Prediction | None:
        return self.inflight.get(pid)

    def admit(self, req: CreateRequest, stream: bool = False) -> Prediction:
        """Validate and reserve a slot; the prediction is registered but not started. Its
        events are kept for SSE when the model streams, or when ``stream`` asks for them."""
        if self.draining:
            raise Refusal(503, response=_SHUTTING_DOWN)
        if not self.ready:
            raise Refusal(503, response=_NOT_READY)
        assert self.validator is not None
        result = self.validator.validate(req.input)
        if result.errors:
            raise Refusal(422, {"detail": result.errors})
        try:
            waiter = self.slots.reserve()
        except AtCapacity:
            raise Refusal(409, response=_AT_CAPACITY) from None
        pid = req.id or new_prediction_id()
        pred = Prediction(
            pid,
            echo_input(result.inputs, self.secrets, self.file_fields),
            iterator=self.output_iterator,
            webhook=req.webhook,
            events_filter=req.events_filter,
            context=req.context,
        )
        pred.worker_inputs = result.inputs
        if result.unknown:
            names = ", ".join(sorted(result.unknown))
            pred.log(f"cogkit: ignored input(s) not in the schema: {names}\n")
        self.inflight[pid] = pred
        if waiter is not None:
            self._waiters[pid] = waiter
        if self.streaming or stream:
            self._streams[pid] = EventStream(self.settings.stream_history)
        return pred

    def stream_of(self, pid: str) -> EventStream | None:
        return self._streams.get(pid)

    def launch(self, pred: Prediction) -> None:
        """Run the prediction in the background (async and streaming requests)."""
        task = asyncio.get_running_loop().create_task(self.start(pred))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_soon(self, pid: str) -> None:
        """Cancel from a callback (a sync client that went away)."""
        pred = self.inflight.get(pid)
        if pred is not None and not pred.terminal:
            log.info("client disconnected; canceling %s", pid)
            task = asyncio.get_running_loop().create_task(self.cancel(pid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def start(self, pred: Prediction) -> Coroutine[Any, Any, None]:
        """Begin running an admitted prediction; await the result to see it through.

        When nothing slow comes first (no wait for a queued slot, no file to fetch), the
        prediction is handed to the worker right here, before the caller awaits anything:
        on a busy server every event-loop turn saved shortens the time a slot is held."""
        hooks = self.webhooks.open(pred)
        if hooks:
            pred.subscribe(hooks.on_change)
        stream = self._streams.get(pred.id)
        if stream:
            pred.subscribe(prediction_listener(stream, pred))
        run = _Run(pred)
        if pred.id not in self._waiters and not self._needs_fetch(pred.worker_inputs):
            self._begin(run)
            self._submit(run, pred.worker_inputs)
        return self._see_through(run)

    def _needs_fetch(self, inputs: dict[str, Any]) -> bool:
        return bool(self.file_fields) and any(inputs.get(name) is not None for name in self.file_fields)

    def _begin(self, run: _Run) -> None:
        run.pred.start()

    def _submit(self, run: _Run, inputs: dict[str, Any]) -> None:
        """Hand the prediction to the worker (synchronously); failures end it."""
        from cogkit.worker.client import WorkerBusy, WorkerNotReady

        pred = run.pred
        assert self.worker is not None
        try:
            run.handle = self.worker.submit(pred.id, inputs, pred.context)
        except WorkerBusy:
            pred.finish("failed", error="the worker had no free slot (internal error)")
        except WorkerNotReady:
            pred.finish("failed", error="the worker is not ready (it may be restarting after a crash)")
        except Exception as exc:  # noqa: BLE001 - never leave a prediction holding its slot
            log.exception("could not hand prediction %s to the worker", pred.id)
            pred.finish("failed", error=f"could not start the prediction: {type(exc).__name__}: {exc}")
        else:
            pred.in_worker = True

    async def _see_through(self, run: _Run) -> None:
        pred = run.pred
        try:
            if run.handle is None and not pred.terminal:
                await self._prepare_and_submit(run)
            if run.handle is not None:
                await self._follow(run)
        except asyncio.CancelledError:
            if not pred.terminal:
                pred.finish("canceled")
            raise
        except UploadError as exc:
            if not pred.terminal:
                pred.finish("failed", error=str(exc))
        except Exception as exc:
            log.exception("prediction %s failed in the server", pred.id)
            if not pred.terminal:
                pred.finish("failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._settle(pred)
            if run.workdir is not None:
                from cogkit.worker.inputs import remove_workdir

                remove_workdir(run.workdir)  # inline: a worker thread here would contend for the GIL

    async def _prepare_and_submit(self, run: _Run) -> None:
        """The slow start: wait for a queued slot, fetch file inputs, then submit."""
        pred = run.pred
        waiter = self._waiters.get(pred.id)
        if waiter is not None:
            try:
                await waiter
                del self._waiters[pred.id]  # the slot is ours now
            except asyncio.CancelledError:
                if not pred.cancel_requested:
                    raise
        if pred.cancel_requested:
            pred.finish("canceled")
            return
        self._begin(run)
        inputs = pred.worker_inputs
        if self.loaded is not None and self._needs_fetch(inputs):
            from cogkit.worker.inputs import InputFileError, prepare_inputs

            run.workdir = tempfile.mkdtemp(prefix="in-", dir=self._workdir)  # never named after the client's id
            fetch = pred.fetching = asyncio.ensure_future(
                prepare_inputs(inputs, self.file_fields, run.workdir)
            )
            try:
                inputs = await fetch
            except InputFileError as exc:
                # Cog 0.23.1's answer (its goldens): 200, failed, this error text
                pred.finish("failed", error=f"Input validation error: {exc}")
                return
            except asyncio.CancelledError:
                if not (pred.cancel_requested and fetch.cancelled()):
                    raise  # this task itself was canceled
            finally:
                pred.fetching = None
        if pred.cancel_requested:
            pred.finish("canceled")
            return
        self._submit(run, inputs)

    async def _follow(self, run: _Run) -> None:
        """Follow the worker's events for this prediction to the terminal one. Output files
        become URLs first; everything else is the record's to fold in."""
        pred, handle = run.pred, run.handle
        worker = self.worker
        assert worker is not None and handle is not None
        if pred.cancel_requested:
            await worker.cancel(pred.id)
        encode = self.outputs.encode
        apply = pred.apply
        async for ev in handle:
            kind = type(ev)
            if kind is P.Output and isinstance(ev.value, (P.FileOutput, dict, list, tuple)):
                try:
                    ev = P.Output(ev.id, await encode(ev.value, pred.id))
                except Exception as exc:  # a failed upload, a file gone before it was read
                    # stop the predictor too: its worker slot must be free when ours is
                    await worker.cancel(pred.id)
                    pred.finish("failed", error=_encode_error(exc))
                    await _drain(handle)
                    return
            elif kind is P.Done and ev.output is not None:
                ev = P.Done(ev.id, await encode(ev.output, pred.id), ev.predict_time)
            if apply(ev):
                return
        if not pred.terminal:  # the handle ended without a terminal event
            pred.finish("failed", error="the worker stopped without finishing the prediction")

    def _settle(self, pred: Prediction) -> None:
        """Terminal bookkeeping, all without awaiting: the slot is free before anyone is told."""
        if not pred.terminal:
            pred.finish("failed", error="the prediction ended without a result (internal error)")
        if self.inflight.get(pred.id) is pred:
            del self.inflight[pred.id]
        waiter = self._waiters.pop(pred.id, None)
        if waiter is not None:
            self.slots.abandon(waiter)
        else:
            self.slots.release()
        self._streams.pop(pred.id, None)
        pred.announce()

    async def cancel(self, pid: str) -> bool:
        pred = self.inflight.get(pid)
        if pred is None or pred.terminal:
            return False
        pred.cancel_requested = True
        waiter = self._waiters.get(pid)
        if waiter is not None and not waiter.done():
            waiter.cancel()
        elif pred.fetching is not None:
            pred.fetching.cancel()
        elif pred.in_worker and self.worker is not None:
            await self.worker.cancel(pid)
        return True

    # ------------------------------------------------------------------ shutdown

    def request_shutdown(self) -> None:
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.get_running_loop().create_task(self.shutdown())

    async def shutdown(self) -> None:
        """Stop taking predictions, let in-flight ones finish for the grace period, cancel
        the rest, deliver their webhooks, stop the worker, then let the HTTP server exit."""
        self.draining = True
        try:
            pending = [p for p in self.inflight.values() if not p.terminal]
            if pending:
                log.info("shutting down: %d prediction(s) in flight", len(pending))
                await _wait_all(pending, self.settings.shutdown_grace)
                for pred in [p for p in self.inflight.values() if not p.terminal]:
                    await self.cancel(pred.id)
                await _wait_all(list(self.inflight.values()), 5.0)
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=5.0)
            if not await self.webhooks.drain(timeout=self.settings.webhook_drain):
                log.warning("shutting down with %d webhook delivery(ies) unfinished", self.webhooks.pending)
            if self._start_task is not None and not self._start_task.done():
                self._start_task.cancel()
            if self.worker is not None:
                try:
                    await self.worker.shutdown(5.0)
                except Exception:
                    log.exception("worker shutdown failed")
            if self._http is not None:
                await self._http.aclose()
                self._http = None
        finally:
            from cogkit.worker.inputs import remove_workdir

            remove_workdir(self._workdir)
            if self.on_exit is not None:
                self.on_exit()


def _encode_error(exc: Exception) -> str:
    """The error of a prediction whose output could not be delivered."""
    return str(exc) if isinstance(exc, UploadError) else f"{type(exc).__name__}: {exc}"


def _build_validator(schema: dict[str, Any], mode: str) -> Any:
    from cogkit.validation import InputValidator

    return InputValidator(schema, mode=mode)


def _preload() -> None:
    import cogkit.worker.inputs  # noqa: F401
    import cogkit.validation  # noqa: F401


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


async def _wait_all(preds: list[Prediction], timeout: float) -> None:
    waits = [p.done.wait() for p in preds if not p.terminal]
    if waits:
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except asyncio.TimeoutError:
            pass


async def _drain(handle: Any) -> None:
    """Consume what is left of a prediction's events (after a cancel) so the worker's slot
    is returned cleanly."""
    try:
        async for _ in handle:
            pass
    except Exception:
        pass
