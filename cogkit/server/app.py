"""The ASGI application: Cog's HTTP routes on top of the prediction service.

A plain ASGI callable with its own small router (no framework middleware on the
request path): prediction round trips are dominated by per-request overhead, and
this keeps it to a dictionary lookup and one JSON encode.

Routes: GET / (discovery), GET /health-check, GET /openapi.json,
POST /predictions (sync, ``Prefer: respond-async``, or SSE), PUT /predictions/{id},
POST /predictions/{id}/cancel, POST /shutdown, and the same under /trainings.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
from typing import Any

from cogkit._version import COG_COMPAT_VERSION, __version__
from cogkit.server import httpio
from cogkit.server.httpio import respond, respond_json, respond_text
from cogkit.server.prediction import Prediction
from cogkit.server.service import PredictionService, Refusal, parse_create
from cogkit.server.sse import TooManySubscribers

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


class App:
    def __init__(self, service: PredictionService) -> None:
        self.service = service
        self._index = httpio.jsonio.dumps(index_document(service.settings.mode))
        self._version = {
            "coglet": COG_COMPAT_VERSION,
            "python_sdk": COG_COMPAT_VERSION,
            "python": platform.python_version(),
            "cogkit": __version__,
        }
        self._k8s_ready_written = not os.environ.get("KUBERNETES_SERVICE_HOST")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                await self._route(scope, receive, send)
            except httpio.ClientGone:
                pass
            except httpio.BodyTooLarge:
                await respond_text(send, 413, "Request body is larger than 100 MiB")
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self.service.begin()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if not self.service.draining:
                    await self.service.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------ routing

    async def _route(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        if path in COLLECTIONS:
            if method == "POST":
                return await self.create(scope, receive, send, COLLECTIONS[path], None)
            return await _not_allowed(send, b"POST")
        if path == "/health-check":
            if method == "GET":
                return await self.health(send)
            return await _not_allowed(send, b"GET")
        for prefix, noun in COLLECTIONS.items():
            if path.startswith(prefix + "/"):
                rest = path[len(prefix) + 1 :]
                if rest.endswith("/cancel") and "/" not in rest[:-7] and len(rest) > 7:
                    if method == "POST":
                        return await self.cancel(send, rest[:-7])
                    return await _not_allowed(send, b"POST")
                if rest and "/" not in rest:
                    if method == "PUT":
                        return await self.create(scope, receive, send, noun, rest)
                    return await _not_allowed(send, b"PUT")
                return await respond(send, 404)
        if path == "/":
            if method == "GET":
                return await respond(send, 200, self._index, httpio.JSON_HEADERS)
            return await _not_allowed(send, b"GET")
        if path == "/openapi.json":
            if method == "GET":
                return await self.openapi(send)
            return await _not_allowed(send, b"GET")
        if path == "/shutdown":
            if method == "POST":
                await respond_json(send, 200, {})
                self.service.request_shutdown()
                return None
            return await _not_allowed(send, b"POST")
        return await respond(send, 404)

    # ------------------------------------------------------------------ simple routes

    async def openapi(self, send: Any) -> None:
        if self.service.schema is None:
            return await respond_json(send, 503, {"error": "OpenAPI schema not available"})
        await respond_json(send, 200, self.service.schema)

    async def health(self, send: Any) -> None:
        service = self.service
        status = service.status()
        body: dict[str, Any] = {"status": status, "setup": service.setup_info(), "version": self._version}
        if status in ("READY", "BUSY"):
            error = await service.user_healthcheck()
            if error is not None:
                body["status"] = "UNHEALTHY"
                body["user_healthcheck_error"] = error
            elif not self._k8s_ready_written:
                self._write_k8s_ready()
        await respond_json(send, 200, body)

    def _write_k8s_ready(self) -> None:
        self._k8s_ready_written = True
        try:
            os.makedirs(os.path.dirname(K8S_READY_FILE), exist_ok=True)
            open(K8S_READY_FILE, "a").close()
        except OSError as exc:
            log.warning("could not write %s: %s", K8S_READY_FILE, exc)

    async def cancel(self, send: Any, pid: str) -> None:
        if await self.service.cancel(pid):
            return await respond_json(send, 200, {})
        await respond_json(send, 404, {})

    # ------------------------------------------------------------------ predictions

    async def create(self, scope: dict[str, Any], receive: Any, send: Any, noun: str, path_id: str | None) -> None:
        service = self.service
        raw = await httpio.read_body(receive)
        if not httpio.is_json_content_type(httpio.header(scope, b"content-type")):
            return await respond_text(send, 415, httpio.WRONG_CONTENT_TYPE)
        try:
            body = httpio.parse_json(raw)
        except ValueError as exc:
            return await respond_text(send, 400, str(exc))
        accept = httpio.header(scope, b"accept") or ""
        sse = "text/event-stream" in accept
        if sse:
            if noun == "training":
                return await respond_json(send, 406, {"error": SSE_TRAINING})
            if service.loaded is not None and not service.streaming:
                return await respond_json(send, 406, {"error": SSE_NOT_ENABLED})
        try:
            req = parse_create(body, path_id, noun)
            existing = service.existing(req.id) if req.id else None
            if existing is not None:
                if sse:
                    return await self._stream(receive, send, existing, created=False)
                return await respond_json(send, 202, existing.body())
            pred = service.admit(req)
        except Refusal as refusal:
            return await respond_json(send, refusal.status, refusal.body)
        subscription = None
        if sse:
            stream = service.stream_of(pred.id)
            subscription = stream.subscribe(replay=True) if stream is not None else None
        service.launch(pred, _trace_headers(scope))
        if sse:
            return await self._stream(receive, send, pred, created=True, subscription=subscription)
        prefer = httpio.header(scope, b"prefer")
        if prefer and "respond-async" in prefer:
            return await respond_json(send, 202, pred.accepted_body())
        await self._wait_sync(receive, send, pred)

    async def _wait_sync(self, receive: Any, send: Any, pred: Prediction) -> None:
        """Answer when the prediction is terminal; cancel it if the client goes away."""
        if not pred.done.is_set():
            finished = asyncio.ensure_future(pred.done.wait())
            gone = asyncio.ensure_future(_wait_disconnect(receive))
            await asyncio.wait((finished, gone), return_when=asyncio.FIRST_COMPLETED)
            if not finished.done():
                finished.cancel()
                log.info("client disconnected; canceling %s", pred.id)
                await self.service.cancel(pred.id)
                return
            gone.cancel()
        await respond_json(send, 200, pred.body())

    async def _stream(
        self, receive: Any, send: Any, pred: Prediction, *, created: bool, subscription: Any = None
    ) -> None:
        if subscription is None:
            stream = self.service.stream_of(pred.id)
            if stream is None:  # not a streaming model, or already finished
                return await respond_json(send, 202, pred.body())
            try:
                subscription = stream.subscribe(replay=True)
            except TooManySubscribers:
                return await respond_json(send, 429, {"error": "Too many stream subscribers"})
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            while True:
                nxt = asyncio.ensure_future(subscription.next())
                await asyncio.wait((nxt, gone), return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    if created and not pred.terminal:
                        log.info("stream client disconnected; canceling %s", pred.id)
                        await self.service.cancel(pred.id)
                    return
                payload = nxt.result()
                if payload is None:
                    break
                await send({"type": "http.response.body", "body": payload, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()
            subscription.close()


async def _wait_disconnect(receive: Any) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return


async def _not_allowed(send: Any, allow: bytes) -> None:
    await respond(send, 405, b"", [(b"allow", allow)])


def _trace_headers(scope: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in scope["headers"]:
        if k in (b"traceparent", b"tracestate"):
            out[k.decode()] = v.decode("latin-1")
    return out
