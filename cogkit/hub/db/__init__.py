"""The hub's database: tables (``tables``), the async engine and Alembic migrations
(``engine``). SQLite (aiosqlite, WAL) and PostgreSQL (asyncpg) through SQLAlchemy 2."""

from cogkit.hub.db.engine import Database, async_url
from cogkit.hub.db import tables

__all__ = ["Database", "async_url", "tables"]
