"""The hub's FastAPI application: Replicate's v1 API under ``/v1`` (token required), the
capability URLs for streams and files, and the model servers' loopback callbacks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from cogkit.exceptions import CogkitError
from cogkit.hub import errors
from cogkit.hub.errors import ApiError
from cogkit.hub.routes import account, deployments, files, internal, models, predictions, stream, web
from cogkit.hub.service import Hub
from cogkit.hub.settings import HubSettings


class BodyLimit:
    """413 for a body over the limit: JSON bodies ``max_body_bytes``, files ``max_file_bytes``
    (checked against Content-Length up front, and while a chunked body arrives)."""

    def __init__(self, app: Any, json_limit: int, file_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.file_limit = file_limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit = self.file_limit if path == "/v1/files" or path.startswith("/internal/") else self.json_limit
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                response = errors.problem(413, f"the request body is larger than the limit of {limit} bytes")
                return await response(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ApiError(413, f"the request body is larger than the limit of {limit} bytes")
            return message

        await self.app(scope, counted, send)


def create_app(settings: HubSettings, token: str, internal_base: str) -> FastAPI:
    hub = Hub(settings, token, internal_base)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await hub.start()
        except CogkitError as exc:  # a bad model or database: a clear message, not a traceback
            app.state.on_startup_error(str(exc))
            yield
            return
        try:
            yield
        finally:
            # uvicorn has already waited (shutdown_grace) for open requests, which includes
            # Prefer: wait requests on running predictions; what still runs gets 1 s more
            await hub.stop(grace=1.0)

    app = FastAPI(title="cogkit hub", description="Replicate's v1 HTTP API, self-hosted", lifespan=lifespan,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None)
    app.state.hub = hub
    app.state.on_startup_error = lambda msg: (_ for _ in ()).throw(CogkitError(msg))
    app.state.started = time.time()
    errors.install(app)
    for module in (predictions, models, deployments, files, account):
        app.include_router(module.router)
    app.include_router(files.public)
    app.include_router(stream.router)
    app.include_router(internal.router)
    app.include_router(web.router)  # last: it ends with the catch-all /{owner}/{name} playground

    @app.get("/health-check", include_in_schema=False)
    async def health() -> dict:
        return {"status": "READY", "models": sorted(hub.current)}

    app.add_middleware(BodyLimit, json_limit=settings.max_body_bytes, file_limit=settings.max_file_bytes)
    return app
