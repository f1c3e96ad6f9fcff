"""Errors in Replicate's shape: RFC 7807 problem documents (``application/problem+json``).

Every client mistake is answered here with its status and a detail naming the field and
the rule; nothing a client sends can turn into a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM = "application/problem+json"

_TITLES = {
    400: "Bad request", 401: "Unauthenticated", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 413: "Payload too large", 415: "Unsupported media type",
    422: "Unprocessable Entity", 429: "Too many requests", 500: "Internal server error",
}


class ApiError(Exception):
    def __init__(self, status: int, detail: str, invalid_fields: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.invalid_fields = invalid_fields
        self.headers = headers


def invalid(field: str, description: str, kind: str = "invalid") -> ApiError:
    """A 422 about one field (dotted path, e.g. ``input.width``)."""
    return ApiError(422, f"{field}: {description}" if field else description,
                    [{"type": kind, "field": field, "description": description}])


def not_found(what: str) -> ApiError:
    return ApiError(404, what)


def problem(status: int, detail: str, invalid_fields: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"title": _TITLES.get(status, "Error"), "detail": detail, "status": status}
    if invalid_fields is not None:
        body["invalid_fields"] = invalid_fields
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.detail, exc.invalid_fields, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "No such endpoint"
        return problem(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # a bug of the hub's, never the client's: say so in the problem shape, log the details
        logging.getLogger("cogkit.hub").error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return problem(500, "internal error in cogkit hub (the details are in its log)")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
            fields.append({"type": str(err.get("type", "invalid")), "field": ".".join(loc),
                           "description": str(err.get("msg", "invalid"))})
        detail = "; ".join(f"{f['field']}: {f['description']}" if f["field"] else f["description"] for f in fields)
        return problem(422, detail or "invalid request", fields)
