"""The models the hub was started with, written into the database at start-up.

A project folder's version id is the hash of its files and its schema, so editing
``predict.py`` and restarting adds a version (the old ones and their predictions stay);
starting again unchanged adds nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import sqlalchemy as sa

from cogkit._version import COG_COMPAT_VERSION
from cogkit.exceptions import ConfigError
from cogkit.hub.db import Database
from cogkit.hub.db import tables as t
from cogkit.hub.ids import now
from cogkit.hub.settings import ModelSpec
from cogkit.hub.versions import project_digest, project_schema, version_id

log = logging.getLogger("cogkit.hub")


async def _schema_of(spec: ModelSpec) -> tuple[str, dict]:
    """(content digest, OpenAPI document) of a project folder or a running Cog server."""
    if spec.path:
        digest = await asyncio.to_thread(project_digest, spec.path)
        schema = await asyncio.to_thread(project_schema, spec.path)
        return digest, schema
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.get(f"{spec.url}/openapi.json")
            r.raise_for_status()
            return f"url:{spec.url}", r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ConfigError(f"model {spec.full_name}: cannot read {spec.url}/openapi.json: {exc}") from None


def can_train(schema: dict) -> bool:
    return "/trainings" in (schema.get("paths") or {})


async def upsert_model(conn: sa.ext.asyncio.AsyncConnection, spec: ModelSpec) -> int:
    row = (await conn.execute(sa.select(t.Model.pk).where(t.Model.owner == spec.owner,
                                                          t.Model.name == spec.name))).first()
    fields = dict(description=spec.description, visibility=spec.visibility, hardware=spec.hardware,
                  github_url=spec.github_url, paper_url=spec.paper_url, license_url=spec.license_url,
                  cover_image_url=spec.cover_image_url)
    if row is None:
        result = await conn.execute(sa.insert(t.Model).values(owner=spec.owner, name=spec.name, run_count=0,
                                                              created_at=now(), **fields))
        return int(result.inserted_primary_key[0])
    await conn.execute(sa.update(t.Model).where(t.Model.pk == row.pk).values(**fields))
    return int(row.pk)


async def register(db: Database, specs: list[ModelSpec]) -> dict[str, str]:
    """Model name -> its current version id (the latest version of that model, whatever
    the creation times say)."""
    schemas = await asyncio.gather(*(_schema_of(s) for s in specs))
    current: dict[str, str] = {}
    async with db.begin() as conn:
        for spec, (digest, schema) in zip(specs, schemas):
            model_pk = await upsert_model(conn, spec)
            vid = version_id(digest, json.dumps(schema, sort_keys=True), spec.weights or "")
            exists = (await conn.execute(sa.select(t.Version.id).where(t.Version.id == vid))).first()
            if exists is None:
                await conn.execute(sa.insert(t.Version).values(
                    id=vid, model_pk=model_pk, created_at=now(), cog_version=COG_COMPAT_VERSION,
                    openapi_schema=schema, project_dir=spec.path, remote_url=spec.url, weights=spec.weights,
                    can_train=can_train(schema), deleted=False,
                ))
                log.info("model %s: new version %s", spec.full_name, vid)
            else:
                # the same content again (perhaps after a revert): it serves again
                await conn.execute(sa.update(t.Version).where(t.Version.id == vid).values(
                    deleted=False, project_dir=spec.path, remote_url=spec.url))
            current[spec.full_name] = vid
    return current
