"""Loopback routes for the hub's own model servers: their Cog webhooks (live outputs and
logs) and their output-file uploads (``--upload-url``). Guarded by a per-run key in the
path rather than the API token, which model servers never see."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cogkit.hub.deps import JSON, hub_of, json_body
from cogkit.hub.errors import ApiError

router = APIRouter(prefix="/internal/{key}", include_in_schema=False)


def _check(request: Request, key: str) -> None:
    if not hmac.compare_digest(key.encode(), hub_of(request).callback_key.encode()):
        raise ApiError(404, "No such endpoint")


@router.post("/events/{pid}")
async def model_event(key: str, pid: str, request: Request) -> JSON:
    _check(request, key)
    await hub_of(request).on_model_event(pid, await json_body(request))
    return JSON({})


@router.put("/uploads/{name}")
async def upload(key: str, name: str, request: Request) -> Response:
    _check(request, key)
    hub = hub_of(request)
    row = await hub.files.save(request.stream(), name=name, content_type=request.headers.get("content-type"),
                               kind="output")
    return Response(status_code=201, headers={"Location": hub.files.key_url(hub.internal_base, row)})
