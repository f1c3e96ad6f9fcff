"""Files: ``POST /v1/files`` (multipart, as both clients send it), get, list, delete,
download; and the token-free key URLs ``/files/<key>/<name>`` of stored files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from starlette.datastructures import UploadFile

from cogkit.hub import render
from cogkit.hub.db import tables as t
from cogkit.hub.deps import JSON, hub_of, origin, require_token
from cogkit.hub.errors import ApiError, invalid
from cogkit.hub.pages import page_of

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])
public = APIRouter()


async def _read(upload: UploadFile) -> AsyncIterator[bytes]:
    while block := await upload.read(1 << 20):
        yield block


async def _metadata(value: Any) -> dict:
    """py sends a form field holding JSON text; npm a file part (a JSON Blob named "blob")."""
    if value is None:
        return {}
    raw = await value.read() if isinstance(value, UploadFile) else value
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not raw.strip():
        return {}
    try:
        meta = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid("metadata", "must be a JSON object", "format") from None
    if not isinstance(meta, dict):
        raise invalid("metadata", "must be a JSON object", "type")
    return meta


@router.post("/files")
async def create_file(request: Request) -> JSON:
    hub = hub_of(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, "POST /v1/files takes multipart/form-data with the file in a part named 'content'")
    try:
        form = await request.form(max_files=4, max_fields=16)
    except Exception as exc:  # noqa: BLE001 - python-multipart raises several kinds for bad bodies
        raise ApiError(400, f"the multipart body cannot be read: {exc}") from None
    try:
        content = form.get("content")
        if not isinstance(content, UploadFile):
            raise invalid("content", "is required: a file part named 'content'", "required")
        meta = await _metadata(form.get("metadata"))
        name = form.get("filename") if isinstance(form.get("filename"), str) else None
        ctype = form.get("type") if isinstance(form.get("type"), str) else None
        row = await hub.files.save(_read(content), name=name or content.filename or "file",
                                   content_type=ctype or content.content_type, kind="upload", metadata=meta)
    finally:
        await form.close()
    return JSON(render.file(row, origin(request)), status_code=201)


@router.get("/files")
async def list_files(request: Request) -> JSON:
    F = t.File
    rows, nxt, prev = await page_of(request, sa.select(F).where(F.kind == "upload", F.deleted.is_(False)), F.pk)
    o = origin(request)
    return JSON(render.page([render.file(r, o) for r in rows], nxt, prev))


async def _file(request: Request, fid: str) -> t.File:
    row = await hub_of(request).files.get(fid)
    if row is None or row.kind != "upload":
        raise ApiError(404, f"File {fid} does not exist")
    return row


@router.get("/files/{fid}")
async def get_file(fid: str, request: Request) -> JSON:
    return JSON(render.file(await _file(request, fid), origin(request)))


@router.delete("/files/{fid}")
async def delete_file(fid: str, request: Request) -> Response:
    row = await _file(request, fid)
    await hub_of(request).files.delete(row)
    return Response(status_code=204)


@router.get("/files/{fid}/download")
async def download_file(fid: str, request: Request) -> FileResponse:
    row = await _file(request, fid)
    return FileResponse(hub_of(request).files.path_of(row), media_type=row.content_type, filename=row.name)


@public.get("/files/{key}/{name}")
async def file_by_key(key: str, name: str, request: Request) -> FileResponse:
    hub = hub_of(request)
    row = await hub.files.by_key(key)
    if row is None or row.name != name:
        raise ApiError(404, "No such file")
    return FileResponse(hub.files.path_of(row), media_type=row.content_type)
