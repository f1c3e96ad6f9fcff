"""Predictions and trainings: create (by version, model or deployment), get, list, cancel,
``Prefer: wait``."""

from __future__ import annotations

import re

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request

from cogkit.hub import render
from cogkit.hub.db import tables as t
from cogkit.hub.deps import JSON, hub_of, json_object, origin, require_token
from cogkit.hub.errors import ApiError, invalid
from cogkit.hub.pages import page_of
from cogkit.hub.settings import split_name
from cogkit.exceptions import ConfigError

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])

_VERSION_REF = re.compile(r"^(?:([^/\s]+)/([^/:\s]+):)?([0-9a-f]{64})$")


async def respond(request: Request, row: t.Prediction, wait: float | None) -> JSON:
    """201 with the prediction; with ``Prefer: wait`` once it is done, or after the wait
    as ``starting`` (what both clients' run() take to mean "poll on", reference §5)."""
    hub = hub_of(request)
    status = None
    if wait is not None:
        row = await hub.wait(row.id, wait) or await hub.get(row.id, row.kind)
        if row.status not in ("succeeded", "failed", "canceled"):
            status = "starting"
    body = await hub.render(row, origin(request), status)
    return JSON(body, status_code=201, headers={"Location": body["urls"]["get"]})


async def create_on(request: Request, version: t.Version, model: t.Model, body: dict, **kw) -> JSON:
    hub = hub_of(request)
    row, wait = await hub.create(version=version, model=model, body=body, origin=origin(request),
                                 prefer=request.headers.get("prefer"),
                                 cancel_after=request.headers.get("cancel-after"), **kw)
    return await respond(request, row, wait)


@router.post("/predictions")
async def create_prediction(request: Request) -> JSON:
    hub = hub_of(request)
    body = await json_object(request)
    ref = body.get("version")
    if not isinstance(ref, str):
        raise invalid("version", "is required: a version id (64 hex characters)", "required")
    m = _VERSION_REF.match(ref)
    if not m:
        raise invalid("version", f"{ref!r} is not a version id (64 hex characters) or owner/name:id", "format")
    version, model = await hub.version_row(m.group(3))
    return await create_on(request, version, model, body, allow_version_key=True)


@router.get("/predictions")
async def list_predictions(request: Request) -> JSON:
    return await _list(request, "prediction")


@router.get("/predictions/{pid}")
async def get_prediction(pid: str, request: Request) -> JSON:
    hub = hub_of(request)
    return JSON(await hub.render(await hub.get(pid), origin(request)))


@router.post("/predictions/{pid}/cancel")
async def cancel_prediction(pid: str, request: Request) -> JSON:
    return await _cancel(request, pid, "prediction")


@router.get("/trainings")
async def list_trainings(request: Request) -> JSON:
    return await _list(request, "training")


@router.get("/trainings/{pid}")
async def get_training(pid: str, request: Request) -> JSON:
    hub = hub_of(request)
    return JSON(await hub.render(await hub.get(pid, "training"), origin(request)))


@router.post("/trainings/{pid}/cancel")
async def cancel_training(pid: str, request: Request) -> JSON:
    return await _cancel(request, pid, "training")


@router.post("/models/{owner}/{name}/versions/{vid}/trainings")
async def create_training(owner: str, name: str, vid: str, request: Request) -> JSON:
    hub = hub_of(request)
    body = await json_object(request)
    model = await hub.model_row(owner, name)
    version, vmodel = await hub.version_row(vid)
    if vmodel.pk != model.pk:
        raise ApiError(404, f"Version {vid} is not a version of {owner}/{name}")
    destination = body.get("destination")
    if not isinstance(destination, str):
        raise invalid("destination", "is required: the owner/name of the model to publish the trained version to",
                      "required")
    try:
        d_owner, d_name = split_name(destination, "destination")
    except ConfigError as exc:
        raise invalid("destination", str(exc).split(": ", 1)[-1], "format") from None
    async with hub.db.session() as s:
        dest = (await s.execute(sa.select(t.Model.pk).where(t.Model.owner == d_owner, t.Model.name == d_name))).first()
    if dest is None:
        raise ApiError(404, "The specified training destination does not exist")
    return await create_on(request, version, model, body, kind="training", destination=destination)


async def _list(request: Request, kind: str) -> JSON:
    hub = hub_of(request)
    P = t.Prediction
    rows, nxt, prev = await page_of(request, sa.select(P).where(P.kind == kind), P.pk)
    o = origin(request)
    return JSON(render.page([await hub.render(r, o) for r in rows], nxt, prev))


async def _cancel(request: Request, pid: str, kind: str) -> JSON:
    hub = hub_of(request)
    await hub.get(pid, kind)
    await hub.cancel(pid)
    return JSON(await hub.render(await hub.get(pid, kind), origin(request)))
