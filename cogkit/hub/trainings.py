"""A succeeded training becomes a new version of its destination model: the trained
version's project, with the training's output file as its weights (``COG_WEIGHTS``), so
``run("you/your-model", ...)`` right after training uses them (Replicate's fine-tuning flow)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from cogkit.hub.db import tables as t
from cogkit.hub.filestore import KEY_PATH
from cogkit.hub.ids import now
from cogkit.hub.versions import version_id

if TYPE_CHECKING:
    from cogkit.hub.service import Hub


def _first_file_url(value: Any, prefix: str) -> str | None:
    if isinstance(value, str):
        return value if value.startswith(prefix) else None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    for item in items:
        found = _first_file_url(item, prefix)
        if found:
            return found
    return None


async def publish_trained_version(hub: Hub, conn: Any, row: t.Prediction) -> None:
    if not row.destination:
        return
    weights_url = _first_file_url(row.output, f"{hub.internal_base}/files/")
    m = KEY_PATH.search(urlsplit(weights_url).path) if weights_url else None
    file_row = (await conn.execute(sa.select(t.File).where(t.File.access_key == m.group(1)))).first() if m else None
    if file_row is None:
        await conn.execute(sa.update(t.Prediction).where(t.Prediction.id == row.id).values(
            status="failed", error="the training succeeded but returned no weights file to make a version from"))
        return
    parent = (await conn.execute(sa.select(t.Version).where(t.Version.id == row.version))).first()
    owner, name = row.destination.split("/", 1)
    dest = (await conn.execute(sa.select(t.Model.pk).where(t.Model.owner == owner, t.Model.name == name))).first()
    if parent is None or dest is None:
        await conn.execute(sa.update(t.Prediction).where(t.Prediction.id == row.id).values(
            status="failed", error=f"the destination {row.destination} or the trained version no longer exists"))
        return
    vid = version_id("trained", parent.id, file_row.sha256)
    exists = (await conn.execute(sa.select(t.Version.id).where(t.Version.id == vid))).first()
    if exists is None:
        await conn.execute(sa.insert(t.Version).values(
            id=vid, model_pk=dest.pk, created_at=now(), cog_version=parent.cog_version,
            openapi_schema=parent.openapi_schema, project_dir=parent.project_dir, remote_url=None,
            weights=str(hub.files.path_of(file_row).resolve()), parent_version=parent.id,
            can_train=parent.can_train, deleted=False,
        ))
    hub.current[row.destination] = vid
    hub.invalidate()
    await conn.execute(sa.update(t.Prediction).where(t.Prediction.id == row.id).values(
        output={"version": f"{row.destination}:{vid}", "weights": weights_url}))
