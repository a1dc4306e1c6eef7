"""The hand-written migrations build exactly what the models describe, and can be undone."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from common.db import create_engine, drop_database, ensure_database
from common.migrations import downgrade, upgrade
from services.auth.models import metadata
from tests.conftest import test_database_url as database_url_for

AUTH_TABLES = {
    "users",
    "channels",
    "subscriptions",
    "refresh_families",
    "refresh_tokens",
    "signing_keys",
    "event_outbox",
}


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


class TestAuthMigrations:
    async def test_the_migrated_schema_matches_the_models(self, auth_database_url: str):
        engine = create_engine(auth_database_url, pool_size=1)
        try:
            async with engine.connect() as connection:
                assert await connection.run_sync(_differences) == []
                assert await connection.run_sync(_tables) == AUTH_TABLES
        finally:
            await engine.dispose()

    async def test_downgrade_removes_every_table_and_upgrade_restores_them(self, service_env: dict[str, str]):
        url = database_url_for("auth_migration_cycle")
        await drop_database(url)
        await ensure_database(url)
        engine = create_engine(url, pool_size=1)
        try:
            await asyncio.to_thread(upgrade, "services.auth", url)
            await asyncio.to_thread(downgrade, "services.auth", url)
            async with engine.connect() as connection:
                assert await connection.run_sync(_tables) == set()
            await asyncio.to_thread(upgrade, "services.auth", url)
            async with engine.connect() as connection:
                assert await connection.run_sync(_tables) == AUTH_TABLES
        finally:
            await engine.dispose()
            await drop_database(url)
