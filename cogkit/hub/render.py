"""Database rows -> the JSON objects Replicate's API returns (reference §3).

The py client parses these with strict pydantic models, so every field it requires is
always present with the right type: ``model``/``version`` strings, ``error`` a string or
null, ``urls`` a map of strings (absent keys rather than nulls).
"""

from __future__ import annotations

from typing import Any

from cogkit.hub.db import tables as t
from cogkit.hub.ids import iso


def account(username: str) -> dict[str, Any]:
    return {"type": "user", "username": username, "name": username, "github_url": None}


def version(row: t.Version) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": iso(row.created_at),
        "cog_version": row.cog_version,
        "openapi_schema": row.openapi_schema,
    }


def model(row: t.Model, origin: str, latest: t.Version | None) -> dict[str, Any]:
    return {
        "url": f"{origin}/{row.owner}/{row.name}",
        "owner": row.owner,
        "name": row.name,
        "description": row.description,
        "visibility": row.visibility,
        "github_url": row.github_url,
        "paper_url": row.paper_url,
        "license_url": row.license_url,
        "run_count": row.run_count,
        "cover_image_url": row.cover_image_url,
        "default_example": None,
        "latest_version": version(latest) if latest is not None else None,
        "is_official": False,
        "hardware": row.hardware,
        "created_at": iso(row.created_at),
    }


def prediction(row: t.Prediction, origin: str, output: Any, status: str | None = None) -> dict[str, Any]:
    """``output`` comes already rendered (file URLs resolved); ``status`` overrides the stored
    one (a timed-out ``Prefer: wait`` answers "starting", reference §5)."""
    noun = "trainings" if row.kind == "training" else "predictions"
    urls = {
        "get": f"{origin}/v1/{noun}/{row.id}",
        "cancel": f"{origin}/v1/{noun}/{row.id}/cancel",
        "stream": f"{origin}/stream/{row.stream_key}",
        "web": f"{origin}/p/{row.stream_key}",
    }
    metrics = dict(row.metrics or {})
    if row.completed_at is not None:
        metrics["total_time"] = round(row.completed_at - row.created_at, 6)
    body: dict[str, Any] = {
        "id": row.id,
        "model": row.model,
        "version": row.version,
        "input": row.input,
        "output": output,
        "logs": row.logs or "",
        "error": row.error,
        "status": status or row.status,
        "source": row.source,
        "data_removed": False,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "completed_at": iso(row.completed_at),
        "urls": urls,
        "metrics": metrics,
    }
    if row.deployment:
        body["deployment"] = row.deployment
    if row.kind == "training":
        body["destination"] = row.destination
    if row.webhook:
        body["webhook"] = row.webhook
        if row.webhook_events_filter is not None:
            body["webhook_events_filter"] = row.webhook_events_filter
    if row.deadline is not None:
        body["deadline"] = iso(row.deadline)
    return body


def file(row: t.File, origin: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "content_type": row.content_type,
        "size": row.size,
        "etag": row.md5,
        "checksums": {"sha256": row.sha256, "md5": row.md5},
        "metadata": row.file_metadata or {},
        "created_at": iso(row.created_at),
        "expires_at": iso(row.expires_at),
        "urls": {"get": f"{origin}/v1/files/{row.id}"},
    }


def deployment(row: t.Deployment, username: str) -> dict[str, Any]:
    return {
        "owner": row.owner,
        "name": row.name,
        "current_release": {
            "number": row.release_number,
            "model": row.model,
            "version": row.version,
            "created_at": iso(row.release_created_at),
            "created_by": account(username),
            "configuration": {
                "hardware": row.hardware,
                "min_instances": row.min_instances,
                "max_instances": row.max_instances,
            },
        },
    }


def page(results: list[Any], next_url: str | None, previous_url: str | None) -> dict[str, Any]:
    return {"next": next_url, "previous": previous_url, "results": results}
