"""Models and their versions: list, search (``QUERY``), get, create, delete, and
predictions on a model's latest version."""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from cogkit.exceptions import ConfigError
from cogkit.hub import render
from cogkit.hub.db import tables as t
from cogkit.hub.deps import JSON, hub_of, json_body, json_object, origin, require_token
from cogkit.hub.errors import ApiError, invalid
from cogkit.hub.ids import now
from cogkit.hub.pages import page_of
from cogkit.hub.routes.predictions import create_on
from cogkit.hub.settings import VISIBILITIES, split_name

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])

_CREATE_KEYS = {"owner", "name", "visibility", "hardware", "description", "github_url", "paper_url",
                "license_url", "cover_image_url"}


async def _models_page(request: Request, query: sa.Select) -> JSON:
    hub = hub_of(request)
    rows, nxt, prev = await page_of(request, query, t.Model.pk)
    o = origin(request)
    return JSON(render.page([render.model(r, o, await hub.latest_version(r)) for r in rows], nxt, prev))


@router.get("/models")
async def list_models(request: Request) -> JSON:
    return await _models_page(request, sa.select(t.Model))


@router.api_route("/models", methods=["QUERY"])
async def search_models(request: Request) -> JSON:
    raw = (await request.body()).decode("utf-8", "replace").strip()
    # npm JSON-encodes the query ("flux" with quotes); py sends it raw
    if raw.startswith('"'):
        try:
            decoded = orjson.loads(raw)
            raw = decoded if isinstance(decoded, str) else raw
        except orjson.JSONDecodeError:
            pass
    if not raw:
        raise invalid("query", "the request body must hold the text to search for", "required")
    like = f"%{raw.lower()}%"
    M = t.Model
    q = sa.select(M).where(sa.or_(sa.func.lower(M.owner + "/" + M.name).like(like),
                                  sa.func.lower(sa.func.coalesce(M.description, "")).like(like)))
    return await _models_page(request, q)


@router.post("/models")
async def create_model(request: Request) -> JSON:
    hub = hub_of(request)
    body = await json_object(request)
    for key in body:
        if key not in _CREATE_KEYS:
            raise invalid(key, f"additional property {key!r} is not allowed", "additional_property_not_allowed")
    for key in ("owner", "name", "visibility", "hardware"):
        if not isinstance(body.get(key), str):
            raise invalid(key, "is required (a string)", "required")
    for key in _CREATE_KEYS - {"owner", "name", "visibility", "hardware"}:
        if body.get(key) is not None and not isinstance(body[key], str):
            raise invalid(key, "must be a string", "type")
    try:
        owner, name = split_name(f"{body['owner']}/{body['name']}", "model")
    except ConfigError as exc:
        raise invalid("name", str(exc).split(": ", 1)[-1], "format") from None
    if body["visibility"] not in VISIBILITIES:
        raise invalid("visibility", "must be one of: public, private", "enum")
    values = {k: body.get(k) for k in _CREATE_KEYS}
    values.update(owner=owner, name=name, run_count=0, created_at=now())
    try:
        async with hub.db.begin() as conn:
            await conn.execute(sa.insert(t.Model).values(**values))
    except sa.exc.IntegrityError:
        raise ApiError(409, f"A model named {owner}/{name} already exists") from None
    hub.invalidate()
    row = await hub.model_row(owner, name)
    return JSON(render.model(row, origin(request), None), status_code=201)


@router.get("/models/{owner}/{name}")
async def get_model(owner: str, name: str, request: Request) -> JSON:
    hub = hub_of(request)
    row = await hub.model_row(owner, name)
    return JSON(render.model(row, origin(request), await hub.latest_version(row)))


@router.delete("/models/{owner}/{name}")
async def delete_model(owner: str, name: str, request: Request) -> Response:
    hub = hub_of(request)
    row = await hub.model_row(owner, name)
    if await hub.versions_of(row):
        raise ApiError(409, f"{owner}/{name} still has versions: delete them first")
    async with hub.db.begin() as conn:
        await conn.execute(sa.delete(t.Model).where(t.Model.pk == row.pk))
    hub.invalidate()
    return Response(status_code=204)


@router.get("/models/{owner}/{name}/versions")
async def list_versions(owner: str, name: str, request: Request) -> JSON:
    hub = hub_of(request)
    rows = await hub.versions_of(await hub.model_row(owner, name))
    return JSON(render.page([render.version(v) for v in rows], None, None))


async def _version_of(request: Request, owner: str, name: str, vid: str) -> t.Version:
    hub = hub_of(request)
    model = await hub.model_row(owner, name)
    version, vmodel = await hub.version_row(vid)
    if vmodel.pk != model.pk:
        raise ApiError(404, f"Version {vid} is not a version of {owner}/{name}")
    return version


@router.get("/models/{owner}/{name}/versions/{vid}")
async def get_version(owner: str, name: str, vid: str, request: Request) -> JSON:
    return JSON(render.version(await _version_of(request, owner, name, vid)))


@router.delete("/models/{owner}/{name}/versions/{vid}")
async def delete_version(owner: str, name: str, vid: str, request: Request) -> Response:
    hub = hub_of(request)
    version = await _version_of(request, owner, name, vid)
    async with hub.db.begin() as conn:
        await conn.execute(sa.update(t.Version).where(t.Version.id == version.id).values(deleted=True))
    if hub.current.get(f"{owner}/{name}") == vid:
        hub.current.pop(f"{owner}/{name}")
    hub.invalidate()
    return Response(status_code=204)


@router.post("/models/{owner}/{name}/predictions")
async def create_model_prediction(owner: str, name: str, request: Request) -> JSON:
    body = await json_body(request)
    version, model = await hub_of(request).runnable(owner, name)
    return await create_on(request, version, model, body)
