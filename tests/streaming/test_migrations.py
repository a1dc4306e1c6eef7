"""The hand-written migrations build exactly the models' schema, and the database itself refuses
session records that break streaming's invariants, whatever code writes them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from common.db import asyncpg_dsn, drop_database, ensure_database
from common.migrations import downgrade, upgrade
from services.streaming.models import PlaybackSession, metadata
from tests.conftest import test_database_url as database_url_for
from tests.streaming.conftest import Player


class TestSchema:
    async def test_the_migrated_database_matches_the_models(self, player: Player):
        def compare(connection: Any) -> list[Any]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        async with player.app.state.engine.connect() as connection:
            assert await connection.run_sync(compare) == []

    async def test_constraints_and_indexes_carry_the_models_names(self, player: Player):
        expected = {str(c.name) for table in metadata.sorted_tables for c in table.constraints} | {
            str(i.name) for table in metadata.sorted_tables for i in table.indexes
        }
        async with player.playback.sessions() as session:
            constraints = await session.scalars(
                text("SELECT conname FROM pg_constraint WHERE connamespace = 'public'::regnamespace")
            )
            indexes = await session.scalars(
                text("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
            )
            actual = {str(name) for name in [*constraints, *indexes] if not str(name).startswith("alembic")}
        assert actual == expected

    async def test_downgrade_and_upgrade_again(self, service_env: dict[str, str]):
        url = database_url_for("streaming_roundtrip")
        await drop_database(url)
        await ensure_database(url)
        try:
            await asyncio.to_thread(upgrade, "services.streaming", url)
            await asyncio.to_thread(downgrade, "services.streaming", url, "0001")
            conn = await asyncpg.connect(asyncpg_dsn(url))
            try:
                rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            finally:
                await conn.close()
            assert {row["tablename"] for row in rows} == {"alembic_version"}
            await asyncio.to_thread(upgrade, "services.streaming", url)
        finally:
            await drop_database(url)


def _session(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": uuid.uuid4(),
        "viewer_id": uuid.uuid4(),
        "video_id": uuid.uuid4(),
        "creator_id": uuid.uuid4(),
        "status": "active",
        "paid": True,
        "price_per_minute": 5,
        "currency": "USD",
        "unit_ms": 60_000,
        "billed_units": 1,
        "started_at": now,
        "updated_at": now,
        **overrides,
    }


class TestConstraints:
    @pytest.mark.parametrize(
        "overrides",
        [
            {"status": "paused"},
            {"paid": False, "billed_units": 1},  # a free session is never billed
            {"billed_units": -1},
            {"status": "ended"},  # ended without ended_at
            {"ended_at": datetime.now(UTC)},  # ended_at while active
            {"unit_ms": 0},
            {"currency": "US"},
            {"end_reason": "bored"},
        ],
        ids=lambda o: ",".join(o),
    )
    async def test_the_database_refuses_an_invalid_session(self, player: Player, overrides: dict[str, Any]):
        async with player.playback.sessions() as session:
            session.add(PlaybackSession(**_session(**overrides)))
            with pytest.raises(IntegrityError):
                await session.flush()
