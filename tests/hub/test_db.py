"""The hub's database: Alembic's migrations create exactly the tables the code declares, on
SQLite and on PostgreSQL, and running them again is a no-op."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cogkit.hub.db import Database
from cogkit.hub.db.tables import Base


def _diff(sync_conn) -> list:
    return compare_metadata(MigrationContext.configure(sync_conn), Base.metadata)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migrations_match_the_tables(tmp_path, kind, db_url_for):
    url = db_url_for(kind) or f"sqlite:///{tmp_path}/hub.db"

    async def check() -> list:
        db = Database(url)
        await db.migrate()
        await db.migrate()  # again: already at head
        if db.engine is None:
            with db.sync_engine.connect() as conn:
                diff = _diff(conn)
                version = conn.execute(sa.text("select version_num from alembic_version")).scalar()
        else:
            async with db.engine.connect() as conn:
                diff = await conn.run_sync(_diff)
                version = (await conn.execute(sa.text("select version_num from alembic_version"))).scalar()
        await db.close()
        return [diff, version]

    diff, version = asyncio.run(check())
    assert diff == [] and version == "0001"


def test_sqlite_runs_in_wal_mode(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/hub.db")
    asyncio.run(db.migrate())
    with db.sync_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_bad_database_urls_are_clear_errors():
    from cogkit.exceptions import ConfigError

    with pytest.raises(ConfigError, match="unsupported database 'mysql'"):
        Database("mysql://x/y")
    with pytest.raises(ConfigError, match="is not a database URL"):
        Database("hub.db")
