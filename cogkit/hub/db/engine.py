"""The async engine and its migrations.

The schema is created and upgraded by Alembic (``cogkit/hub/db/migrations``), run at
start-up on the same connection the hub then uses (Alembic's connection-sharing recipe),
so ``cogkit hub`` on an old database upgrades it in place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

from cogkit.exceptions import ConfigError

MIGRATIONS = Path(__file__).with_name("migrations")


def async_url(url: str) -> str:
    """A user's SQLAlchemy URL with the async driver the hub uses."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"--db: {url!r} is not a database URL (sqlite:////abs/path/hub.db or postgresql://...)")
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    raise ConfigError(f"--db: unsupported database {base!r}; use sqlite:// or postgresql://")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class _Inline:
    """A sync SQLAlchemy connection or session behind the async ``execute`` the hub calls."""

    def __init__(self, target: Any) -> None:
        self._target = target

    async def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        return self._target.execute(statement, *args, **kwargs)


class Database:
    """``begin()`` (a write transaction) and ``session()`` (reads), both async context
    managers, over PostgreSQL (asyncpg) or SQLite.

    SQLite runs inline on the event loop thread through the sync pysqlite driver: a WAL
    commit takes ~0.1 ms, while each aiosqlite statement costs a thread round trip
    (measured ~1 ms per small transaction here, bench/RESULTS.md "cogkit hub"). Write
    transactions are serialised by an asyncio lock, so one never waits on SQLite's file
    lock while another holds it across an ``await`` (that wait would block the loop).
    """

    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self._write_lock = asyncio.Lock()
        if self.is_sqlite:
            path = self.url.split(":///", 1)[1] if ":///" in self.url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.sync_engine = create_engine(self.url.replace("sqlite+aiosqlite", "sqlite+pysqlite", 1),
                                             connect_args={"timeout": 30})
            event.listen(self.sync_engine, "connect", _sqlite_pragmas)
            self.engine = None
            self._sessions = sessionmaker(self.sync_engine, expire_on_commit=False)
        else:
            self.engine: AsyncEngine | None = create_async_engine(self.url, pool_size=10, max_overflow=10)
            self._async_sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[Any]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        if self.engine is not None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock:
            with self.sync_engine.begin() as conn:
                yield _Inline(conn)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        """For reads: ``await s.execute(select(...))``."""
        if self.engine is not None:
            async with self._async_sessions() as s:
                yield s
            return
        with self._sessions() as s:
            yield _Inline(s)

    async def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        def upgrade(sync_conn: Any) -> None:
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, "head")

        if self.engine is not None:
            async with self.engine.begin() as conn:
                await conn.run_sync(upgrade)
        else:
            with self.sync_engine.begin() as conn:
                upgrade(conn)

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()
        else:
            self.sync_engine.dispose()
