"""Account, hardware, collections and the webhook signing secret."""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request

from cogkit.hub import render
from cogkit.hub.db import tables as t
from cogkit.hub.deps import JSON, hub_of, origin, require_token
from cogkit.hub.errors import ApiError

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])


@lru_cache(maxsize=1)
def hardware() -> list[dict[str, str]]:
    """The CPU, and each kind of GPU ``nvidia-smi`` reports on this machine."""
    items = [{"sku": "cpu", "name": "CPU"}]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        seen = set()
        for name in (line.strip() for line in out.splitlines()):
            if name and name not in seen:
                seen.add(name)
                sku = "gpu-" + "-".join(name.lower().replace("nvidia", "").split())
                items.append({"sku": sku, "name": name})
    return items


@router.get("/account")
async def account(request: Request) -> JSON:
    return JSON(render.account(hub_of(request).settings.username))


@router.get("/hardware")
async def list_hardware() -> JSON:
    return JSON(hardware())


@router.get("/webhooks/default/secret")
async def webhook_secret(request: Request) -> JSON:
    return JSON({"key": hub_of(request).webhook_secret})


async def _collection(request: Request, spec, with_models: bool) -> dict:
    body = {"name": spec.name, "slug": spec.slug, "description": spec.description,
            "full_description": spec.full_description}
    if with_models:
        hub = hub_of(request)
        o = origin(request)
        models = []
        for ref in spec.models:
            owner, _, name = ref.partition("/")
            async with hub.db.session() as s:
                row = (await s.execute(sa.select(t.Model).where(t.Model.owner == owner, t.Model.name == name))).scalar()
            if row is not None:
                models.append(render.model(row, o, await hub.latest_version(row)))
        body["models"] = models
    return body


@router.get("/collections")
async def list_collections(request: Request) -> JSON:
    specs = hub_of(request).settings.collections
    return JSON(render.page([await _collection(request, c, False) for c in specs], None, None))


@router.get("/collections/{slug}")
async def get_collection(slug: str, request: Request) -> JSON:
    for spec in hub_of(request).settings.collections:
        if spec.slug == slug:
            return JSON(await _collection(request, spec, True))
    raise ApiError(404, f"Collection {slug} does not exist")
