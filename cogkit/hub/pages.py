"""Cursor pagination, newest first, with absolute ``next``/``previous`` URLs (the only
form both clients follow, reference §2)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import Request

from cogkit.hub.deps import decode_cursor, encode_cursor, hub_of, origin


async def page_of(request: Request, query: sa.Select, pk: Any) -> tuple[list[Any], str | None, str | None]:
    """One page of ``query`` (rows with primary key column ``pk``) and the next/previous URLs."""
    hub = hub_of(request)
    size = hub.settings.page_size
    cursor = decode_cursor(request.query_params.get("cursor"))
    if cursor is None or cursor[0] == "<":
        q = query.order_by(pk.desc()).limit(size + 1)
        if cursor is not None:
            q = q.where(pk < cursor[1])
        async with hub.db.session() as s:
            rows = list((await s.execute(q)).scalars().all())
        more_older = len(rows) > size
        rows = rows[:size]
        more_newer = cursor is not None
    else:
        q = query.where(pk > cursor[1]).order_by(pk.asc()).limit(size + 1)
        async with hub.db.session() as s:
            rows = list((await s.execute(q)).scalars().all())
        more_newer = len(rows) > size
        rows = list(reversed(rows[:size]))
        more_older = True
    base = f"{origin(request)}{request.url.path}"
    next_url = f"{base}?cursor={encode_cursor('<', _pk(rows[-1]))}" if rows and more_older else None
    prev_url = f"{base}?cursor={encode_cursor('>', _pk(rows[0]))}" if rows and more_newer else None
    return rows, next_url, prev_url


def _pk(row: Any) -> int:
    return int(row.pk)
