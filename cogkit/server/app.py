"""Cog's HTTP routes on top of the prediction service.

Routes: GET / (discovery; the playground for a browser), GET /health-check, GET /openapi.json,
POST /predictions (sync, ``Prefer: respond-async``, or SSE), PUT /predictions/{id},
POST /predictions/{id}/cancel, POST /shutdown, and the same under /trainings; and the web
playground: GET /playground, its files under /playground/assets/, and POST
/playground/predictions (a prediction answered as server-sent events, streaming model or not).

The router returns a response at once where it can (errors, 409, health without a
user healthcheck) and a coroutine only when it must wait, so the common refusals
cost no task (see http.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
from collections.abc import Awaitable
from typing import Any

from cogkit import playground
from cogkit._version import COG_COMPAT_VERSION, __version__
from cogkit.server import httpio, jsonio
from cogkit.server.http import HandlerResult, Request, Response
from cogkit.server.httpio import json_response, text_response
from cogkit.server.prediction import Prediction
from cogkit.server.service import PredictionService, Refusal, parse_create
from cogkit.server.sse import Subscription, TooManySubscribers, frame

log = logging.getLogger("cogkit.server")

SSE_NOT_ENABLED = (
    "This model does not support streaming responses. Add @cog.streaming to predict() to enable SSE."
)
SSE_TRAINING = "Training endpoints do not support streaming responses."
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
K8S_READY_FILE = "/var/run/cog/ready"
NOT_FOUND: Response = (404, [], b"")
EMPTY_OBJECT: Response = json_response(200, {})
CANCEL_UNKNOWN: Response = json_response(404, {})

# collection path -> noun used in messages
COLLECTIONS = {"/predictions": "prediction", "/trainings": "training"}


def index_document(mode: str) -> dict[str, Any]:
    doc = {
        "cog_version": COG_COMPAT_VERSION,
        "cogkit_version": __version__,
        "docs_url": "/docs",
        "healthcheck_url": "/health-check",
        "openapi_url": "/openapi.json",
        "predictions_cancel_url": "/predictions/{prediction_id}/cancel",
        "predictions_idempotent_url": "/predictions/{prediction_id}",
        "predictions_url": "/predictions",
        "shutdown_url": "/shutdown",
    }
    if mode == "train":
        doc["trainings_cancel_url"] = "/trainings/{training_id}/cancel"
        doc["trainings_idempotent_url"] = "/trainings/{training_id}"
        doc["trainings_url"] = "/trainings"
    return doc


def _not_allowed(allow: bytes) -> Response:
    return 405, [(b"allow", allow)], b""


class App:
    def __init__(self, service: PredictionService) -> None:
        self.service = service
        self._index = json_response(200, index_document(service.settings.mode))
        self._version = {
            "coglet": COG_COMPAT_VERSION,
            "python_sdk": COG_COMPAT_VERSION,
            "python": platform.python_version(),
            "cogkit": __version__,
        }
        self._k8s_ready_written = not os.environ.get("KUBERNETES_SERVICE_HOST")
        settings = service.settings
        title = os.path.basename(os.path.abspath(settings.project_dir)) or "model"
        config = {"page": "playground", "kind": "cog", "mode": settings.mode, "title": title}
        self._noun = "training" if settings.mode == "train" else "prediction"
        self._playground = (200, _bytes_headers(playground.PAGE_HEADERS), playground.page(config, title))

    # ------------------------------------------------------------------ routing

    def __call__(self, req: Request) -> HandlerResult:
        method, path = req.method, req.path
        if method == "HEAD":
            method = "GET"  # as coglet's router does; http.py leaves the body out
        noun = COLLECTIONS.get(path)
        if noun is not None:
            return self.create(req, noun, None) if method == "POST" else _not_allowed(b"POST")
        if path == "/health-check":
            return self.health() if method == "GET" else _not_allowed(b"GET")
        for prefix, noun in COLLECTIONS.items():
            if path.startswith(prefix + "/"):
                rest = path[len(prefix) + 1 :]
                if rest.endswith("/cancel") and len(rest) > 7 and "/" not in rest[:-7]:
                    return self.cancel(rest[:-7]) if method == "POST" else _not_allowed(b"POST")
                if rest and "/" not in rest:
                    return self.create(req, noun, rest) if method == "PUT" else _not_allowed(b"PUT")
                return NOT_FOUND
        if path == "/":
            if method != "GET":
                return _not_allowed(b"GET")
            return self._playground if playground.prefers_html(req.header(b"accept")) else self._index
        if path == "/playground" or path.startswith("/playground/"):
            return self.playground_route(req, method, path[len("/playground/"):])
        if path == "/openapi.json":
            return self.openapi() if method == "GET" else _not_allowed(b"GET")
        if path == "/shutdown":
            if method != "POST":
                return _not_allowed(b"POST")
            asyncio.get_running_loop().call_soon(self.service.request_shutdown)
            return EMPTY_OBJECT
        return NOT_FOUND

    # ------------------------------------------------------------------ simple routes

    def openapi(self) -> Response:
        if self.service.schema is None:
            return json_response(503, {"error": "OpenAPI schema not available"})
        return json_response(200, self.service.schema)

    def health(self) -> HandlerResult:
        service = self.service
        status = service.status()
        body: dict[str, Any] = {"status": status, "setup": service.setup_info(), "version": self._version}
        if status in ("READY", "BUSY") and service.has_user_healthcheck:
            return self._health_with_user_check(body)
        if status in ("READY", "BUSY") and not self._k8s_ready_written:
            self._write_k8s_ready()
        return json_response(200, body)

    async def _health_with_user_check(self, body: dict[str, Any]) -> Response:
        error = await self.service.user_healthcheck()
        if error is not None:
            body["status"] = "UNHEALTHY"
            body["user_healthcheck_error"] = error
        elif not self._k8s_ready_written:
            self._write_k8s_ready()
        return json_response(200, body)

    def _write_k8s_ready(self) -> None:
        self._k8s_ready_written = True
        try:
            os.makedirs(os.path.dirname(K8S_READY_FILE), exist_ok=True)
            open(K8S_READY_FILE, "a").close()
        except OSError as exc:
            log.warning("could not write %s: %s", K8S_READY_FILE, exc)

    def cancel(self, pid: str) -> HandlerResult:
        if self.service.existing(pid) is None:
            return CANCEL_UNKNOWN
        return self._cancel(pid)

    async def _cancel(self, pid: str) -> Response:
        return EMPTY_OBJECT if await self.service.cancel(pid) else CANCEL_UNKNOWN

    # ------------------------------------------------------------------ playground

    def playground_route(self, req: Request, method: str, rest: str) -> HandlerResult:
        if req.path == "/playground":
            return self._playground if method == "GET" else _not_allowed(b"GET")
        if rest == "predictions":  # the playground's own transport: always server-sent events
            return self.create(req, self._noun, None, always_stream=True) if method == "POST" else _not_allowed(b"POST")
        found = playground.asset(rest)
        if found is None:
            return NOT_FOUND
        if method != "GET":
            return _not_allowed(b"GET")
        status, headers, body = found.answer(req.header(b"if-none-match"))
        return status, _bytes_headers(headers), body

    # ------------------------------------------------------------------ predictions

    def create(self, req: Request, noun: str, path_id: str | None, always_stream: bool = False) -> HandlerResult:
        service = self.service
        if not httpio.is_json_content_type(req.header(b"content-type")):
            return text_response(415, httpio.WRONG_CONTENT_TYPE)
        try:
            body = httpio.parse_json(req.body)
        except ValueError as exc:
            return text_response(400, str(exc))
        sse = always_stream or b"text/event-stream" in req.headers.get(b"accept", b"")
        if sse and not always_stream:
            if noun == "training":
                return json_response(406, {"error": SSE_TRAINING})
            if service.loaded is not None and not service.streaming:
                return json_response(406, {"error": SSE_NOT_ENABLED})
        if service.validator_coming:
            return self._after_validator(req, noun, path_id, always_stream)
        try:
            creq = parse_create(body, path_id, noun)
            existing = service.existing(creq.id) if creq.id else None
            if existing is not None:
                if sse:
                    return self._stream(req, existing, created=False)
                return json_response(202, existing.body())
            pred = service.admit(creq, stream=always_stream)
        except Refusal as refusal:
            return _refused_event(refusal.response) if always_stream else refusal.response
        pred.trace_headers = _trace_headers(req)
        if sse:
            stream = service.stream_of(pred.id)
            subscription = stream.subscribe(replay=True) if stream is not None else None
            service.launch(pred)
            return self._stream(req, pred, created=True, subscription=subscription)
        prefer = req.headers.get(b"prefer")
        if prefer is not None and b"respond-async" in prefer:
            service.launch(pred)
            return json_response(202, pred.accepted_body())
        return self._sync(req, pred, service.start(pred))

    async def _after_validator(self, req: Request, noun: str, path_id: str | None, always_stream: bool) -> Response | None:
        """A request in the few milliseconds between READY and the validator being built."""
        await self.service.validator_built.wait()
        result = self.create(req, noun, path_id, always_stream)
        return result if isinstance(result, tuple) else await result

    async def _sync(self, req: Request, pred: Prediction, running: Awaitable[None]) -> Response | None:
        """Wait for the prediction in this request's task; if the client goes away, cancel it."""
        service = self.service

        def on_disconnect(_: Any) -> None:
            service.cancel_soon(pred.id)

        req.disconnected.add_done_callback(on_disconnect)
        try:
            await running
        finally:
            req.disconnected.remove_done_callback(on_disconnect)
        if req.disconnected.done():
            return None  # nobody to answer
        return 200, httpio.JSON_HEADERS, jsonio.dumps(pred.body())

    async def _stream(
        self, req: Request, pred: Prediction, *, created: bool, subscription: Subscription | None = None
    ) -> Response | None:
        if subscription is None:
            stream = self.service.stream_of(pred.id)
            if stream is None:  # not a streaming model, or already finished
                return json_response(202, pred.body())
            try:
                subscription = stream.subscribe(replay=True)
            except TooManySubscribers:
                return json_response(429, {"error": "Too many stream subscribers"})
        req.stream_start(200, SSE_HEADERS)
        gone = req.disconnected
        try:
            while True:
                nxt = asyncio.ensure_future(subscription.next())
                await asyncio.wait((nxt, gone), return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    if created and not pred.terminal:
                        log.info("stream client disconnected; canceling %s", pred.id)
                        await self.service.cancel(pred.id)
                    return None
                payload = nxt.result()
                if payload is None:
                    break
                await req.stream_write(payload)
            req.stream_end()
        finally:
            subscription.close()
        return None


def _refused_event(response: Response) -> Response:
    """A refusal for the playground, as its one ``refused`` event: an error status would
    also be logged by the browser's console, and the page shows the message itself."""
    status, _, body = response
    try:
        detail = jsonio.loads(body)
    except ValueError:
        detail = body.decode(errors="replace")
    return 200, SSE_HEADERS, frame("refused", {"status": status, "body": detail})


def _bytes_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in headers]


def _trace_headers(req: Request) -> dict[str, str]:
    """W3C trace context to forward on webhooks; values that are not printable ASCII
    (invalid trace context, and unsendable by the HTTP client) are dropped."""
    out = {}
    for name in (b"traceparent", b"tracestate"):
        value = req.headers.get(name)
        if value is not None and value.isascii() and value.decode("ascii").isprintable():
            out[name.decode()] = value.decode("ascii")
    return out
