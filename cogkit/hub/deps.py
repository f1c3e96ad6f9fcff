"""What every route shares: the hub, the token check, the origin for absolute URLs,
JSON bodies, JSON responses and cursor pages."""

from __future__ import annotations

import base64
import hmac
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from cogkit.hub.errors import ApiError
from cogkit.hub.service import Hub

UNAUTHENTICATED = "You did not pass a valid authentication token"


def hub_of(request: Request) -> Hub:
    return request.app.state.hub


async def require_token(request: Request) -> None:
    """``Authorization: Bearer <token>`` (or the older ``Token <token>``), compared in constant time."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    expected = hub_of(request).token
    if scheme.lower() not in ("bearer", "token") or not hmac.compare_digest(value.strip().encode(), expected.encode()):
        raise ApiError(401, UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})


def origin(request: Request) -> str:
    """Where the client reached the hub: ``--public-url``, else its Host header."""
    hub = hub_of(request)
    if hub.settings.public_url:
        return hub.settings.public_url
    host = request.headers.get("host")
    if not host or any(c in host for c in "/\\@ "):
        return hub.default_origin
    return f"{request.url.scheme}://{host}"


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None


async def json_object(request: Request) -> dict:
    """The body as a JSON object (400 if it is not JSON, 422 if it is not an object)."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(422, "the request body must be a JSON object",
                       [{"type": "type", "field": "", "description": "the request body must be a JSON object"}])
    return body


def encode_cursor(direction: str, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{direction}{pk}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[str, int] | None:
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        direction, pk = text[0], int(text[1:])
        if direction not in "<>":
            raise ValueError
    except (ValueError, IndexError, UnicodeDecodeError):
        raise ApiError(400, f"cursor: {cursor!r} is not a cursor this hub gave out") from None
    return direction, pk
