"""Deployments: a name pinned to a model version with its own instance limits, and
predictions through it."""

from __future__ import annotations

import re

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from cogkit.hub import render
from cogkit.hub.db import tables as t
from cogkit.hub.deps import JSON, hub_of, json_body, json_object, require_token
from cogkit.hub.errors import ApiError, invalid
from cogkit.hub.ids import now
from cogkit.hub.pages import page_of
from cogkit.hub.routes.predictions import create_on
from cogkit.hub.settings import NAME_RE

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])

_FIELDS = {"model", "version", "hardware", "min_instances", "max_instances"}
_VID = re.compile(r"^[0-9a-f]{64}$")


async def _checked(request: Request, body: dict, creating: bool) -> dict:
    allowed = _FIELDS | ({"name"} if creating else set())
    for key in body:
        if key not in allowed:
            raise invalid(key, f"additional property {key!r} is not allowed", "additional_property_not_allowed")
    if creating:
        for key in sorted(allowed):
            if key not in body:
                raise invalid(key, "is required", "required")
    for key in ("min_instances", "max_instances"):
        if key in body and (not isinstance(body[key], int) or isinstance(body[key], bool) or body[key] < 0):
            raise invalid(key, "must be an integer >= 0", "type")
    if body.get("max_instances") == 0:
        raise invalid("max_instances", "must be at least 1", "minimum")
    for key in ("name", "model", "version", "hardware"):
        if key in body and not isinstance(body[key], str):
            raise invalid(key, "must be a string", "type")
    if "version" in body and not _VID.match(body["version"]):
        raise invalid("version", "must be a version id (64 hex characters)", "format")
    if "name" in body and not NAME_RE.match(body["name"]):
        raise invalid("name", "letters, digits, '.', '_' and '-' only", "format")
    if "version" in body:
        hub = hub_of(request)
        version, model = await hub.version_row(body["version"])
        ref = f"{model.owner}/{model.name}"
        if body.get("model", ref) != ref:
            raise invalid("version", f"is not a version of {body['model']}", "invalid")
        body = dict(body, model=ref)
    return body


async def _row(request: Request, owner: str, name: str) -> t.Deployment:
    async with hub_of(request).db.session() as s:
        row = (await s.execute(sa.select(t.Deployment).where(t.Deployment.owner == owner,
                                                             t.Deployment.name == name))).scalar()
    if row is None:
        raise ApiError(404, f"Deployment {owner}/{name} does not exist")
    return row


@router.get("/deployments")
async def list_deployments(request: Request) -> JSON:
    hub = hub_of(request)
    rows, nxt, prev = await page_of(request, sa.select(t.Deployment), t.Deployment.pk)
    return JSON(render.page([render.deployment(r, hub.settings.username) for r in rows], nxt, prev))


@router.post("/deployments")
async def create_deployment(request: Request) -> JSON:
    hub = hub_of(request)
    body = await _checked(request, await json_object(request), creating=True)
    owner = hub.settings.username
    values = dict(owner=owner, name=body["name"], model=body["model"], version=body["version"],
                  hardware=body["hardware"], min_instances=body["min_instances"], max_instances=body["max_instances"],
                  release_number=1, release_created_at=now(), created_at=now())
    try:
        async with hub.db.begin() as conn:
            await conn.execute(sa.insert(t.Deployment).values(**values))
    except sa.exc.IntegrityError:
        raise ApiError(409, f"A deployment named {owner}/{body['name']} already exists") from None
    await hub.warm_deployment(owner, body["name"])
    return JSON(render.deployment(await _row(request, owner, body["name"]), owner), status_code=201)


@router.get("/deployments/{owner}/{name}")
async def get_deployment(owner: str, name: str, request: Request) -> JSON:
    return JSON(render.deployment(await _row(request, owner, name), hub_of(request).settings.username))


@router.patch("/deployments/{owner}/{name}")
async def update_deployment(owner: str, name: str, request: Request) -> JSON:
    hub = hub_of(request)
    row = await _row(request, owner, name)
    body = await _checked(request, await json_object(request), creating=False)
    if not body:
        raise invalid("", "give at least one of version, hardware, min_instances, max_instances", "required")
    values = {k: v for k, v in body.items() if k in _FIELDS}
    values.update(release_number=row.release_number + 1, release_created_at=now())
    async with hub.db.begin() as conn:
        await conn.execute(sa.update(t.Deployment).where(t.Deployment.pk == row.pk).values(**values))
    hub.forget_deployment(f"{owner}/{name}")
    await hub.warm_deployment(owner, name)
    return JSON(render.deployment(await _row(request, owner, name), hub.settings.username))


@router.delete("/deployments/{owner}/{name}")
async def delete_deployment(owner: str, name: str, request: Request) -> Response:
    hub = hub_of(request)
    row = await _row(request, owner, name)
    async with hub.db.begin() as conn:
        await conn.execute(sa.delete(t.Deployment).where(t.Deployment.pk == row.pk))
    hub.forget_deployment(f"{owner}/{name}")
    return Response(status_code=204)


@router.post("/deployments/{owner}/{name}/predictions")
async def create_deployment_prediction(owner: str, name: str, request: Request) -> JSON:
    hub = hub_of(request)
    row = await _row(request, owner, name)
    version, model = await hub.version_row(row.version)
    return await create_on(request, version, model, await json_body(request), deployment=f"{owner}/{name}")
