"""Files kept under ``<data-dir>/files``: uploads (``POST /v1/files``) and the output files
model servers PUT to the hub. Each has an API id and an unguessable access key; the key
URL ``/files/<key>/<name>`` is served without the token (model servers and npm's
FileOutput fetch without credentials)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pybase64
import sqlalchemy as sa

from cogkit.files import guess_mime, safe_filename
from cogkit.hub.db import Database
from cogkit.hub.db import tables as t
from cogkit.hub.errors import ApiError
from cogkit.hub.ids import new_id, new_key, now

KEY_PATH = re.compile(r"/files/([A-Za-z0-9_-]{20,64})/[^/?#]*$")
API_PATH = re.compile(r"/v1/files/([a-z0-9]{10,40})$")


class FileStore:
    def __init__(self, db: Database, data_dir: str, max_bytes: int) -> None:
        self.db = db
        self.root = Path(data_dir) / "files"
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    async def save(self, chunks: AsyncIterator[bytes], *, name: str, content_type: str | None, kind: str,
                   metadata: dict | None = None) -> t.File:
        fid = new_id()
        rel = f"files/{fid}"
        path = self.root / fid
        sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
        tmp = path.with_suffix(".part")
        try:
            with open(tmp, "wb") as f:
                async for block in chunks:
                    size += len(block)
                    if size > self.max_bytes:
                        raise ApiError(413, f"file is larger than the limit of {self.max_bytes} bytes")
                    sha.update(block)
                    md5.update(block)
                    f.write(block)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        name = safe_filename(name or "file") or "file"
        values = dict(
            id=fid, kind=kind, name=name, content_type=content_type or guess_mime(name), size=size,
            sha256=sha.hexdigest(), md5=md5.hexdigest(), file_metadata=metadata or {}, path=rel,
            access_key=new_key(), created_at=now(), expires_at=None, deleted=False,
        )
        async with self.db.begin() as conn:
            await conn.execute(sa.insert(t.File).values(**values))
        return t.File(**values)

    async def get(self, fid: str) -> t.File | None:
        async with self.db.session() as s:
            row = (await s.execute(sa.select(t.File).where(t.File.id == fid, t.File.deleted.is_(False)))).scalar()
        return row

    async def by_key(self, key: str) -> t.File | None:
        async with self.db.session() as s:
            row = (await s.execute(sa.select(t.File).where(t.File.access_key == key,
                                                          t.File.deleted.is_(False)))).scalar()
        return row

    def path_of(self, row: t.File) -> Path:
        return self.root.parent / row.path

    async def delete(self, row: t.File) -> None:
        async with self.db.begin() as conn:
            await conn.execute(sa.update(t.File).where(t.File.pk == row.pk).values(deleted=True))
        self.path_of(row).unlink(missing_ok=True)

    @staticmethod
    def key_url(base: str, row: t.File) -> str:
        return f"{base}/files/{row.access_key}/{row.name}"

    def data_uri(self, row: t.File) -> str:
        data = self.path_of(row).read_bytes()
        return f"data:{row.content_type};base64,{pybase64.b64encode(data).decode()}"
