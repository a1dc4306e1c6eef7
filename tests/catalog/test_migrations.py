"""The hand-written migrations build exactly the models' schema, and the database itself refuses
rows that break the catalog's invariants, whatever code writes them."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from common.db import asyncpg_dsn, drop_database, ensure_database
from common.migrations import downgrade, upgrade
from services.catalog.models import metadata
from tests.catalog.conftest import CatalogDriver
from tests.conftest import test_database_url as database_url_for


class TestSchema:
    async def test_the_migrated_database_matches_the_models(self, catalog: CatalogDriver):
        def compare(connection) -> list:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, metadata)

        async with catalog.app.state.engine.connect() as connection:
            assert await connection.run_sync(compare) == []

    async def test_constraints_and_indexes_carry_the_models_names(self, catalog: CatalogDriver):
        # compare_metadata does not look at CHECK constraints; names are how errors and later
        # migrations refer to them, so they must match exactly.
        expected = {str(c.name) for table in metadata.sorted_tables for c in table.constraints} | {
            str(i.name) for table in metadata.sorted_tables for i in table.indexes
        }
        async with catalog.sessions() as session:
            constraints = await session.scalars(
                text("SELECT conname FROM pg_constraint WHERE connamespace = 'public'::regnamespace")
            )
            indexes = await session.scalars(
                text("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
            )
            actual = {str(name) for name in [*constraints, *indexes] if not str(name).startswith("alembic")}
        assert actual == expected

    async def test_search_has_a_gin_index_and_lists_have_keyset_indexes(self, catalog: CatalogDriver):
        async with catalog.sessions() as session:
            rows = await session.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'videos'")
            )
            indexes: dict[str, str] = {str(row[0]): str(row[1]) for row in rows.all()}
        assert "USING gin (search_vector)" in indexes["ix_videos_search_vector"]
        assert "(published_at DESC, id DESC) WHERE" in indexes["ix_videos_public_published"]
        assert "(view_count DESC, id DESC) WHERE" in indexes["ix_videos_public_views"]

    async def test_downgrade_and_upgrade_again(self, service_env):
        url = database_url_for("catalog_roundtrip")
        await drop_database(url)
        await ensure_database(url)
        try:
            await asyncio.to_thread(upgrade, "services.catalog", url)
            await asyncio.to_thread(downgrade, "services.catalog", url, "0001")
            conn = await asyncpg.connect(asyncpg_dsn(url))
            try:
                tables = {
                    r["tablename"]
                    for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                }
            finally:
                await conn.close()
            assert tables == {"alembic_version"}
            await asyncio.to_thread(upgrade, "services.catalog", url)
        finally:
            await drop_database(url)


class TestConstraints:
    @pytest.mark.parametrize(
        "assignment",
        [
            "like_count = -1",
            "comment_count = -1",
            "view_count = -1",
            "price_per_minute = 10001",
            "price_per_minute = -1",
            "status = 'deleted'",
            "visibility = 'hidden'",
            "status = 'processing', progress = 101",
            "progress = 5",  # progress exists only while processing
            "status = 'failed'",  # a failure needs its reason
            "title = ''",
        ],
    )
    async def test_rows_breaking_an_invariant_are_refused(self, catalog: CatalogDriver, assignment):
        video = await catalog.ready_video()
        async with catalog.sessions() as session:
            with pytest.raises(IntegrityError):
                await session.execute(
                    text(f"UPDATE videos SET {assignment} WHERE id = :v"), {"v": video["id"]}
                )

    async def test_one_reaction_per_user_and_video(self, catalog: CatalogDriver):
        video = await catalog.ready_video()
        user = uuid.uuid4()
        insert = text("INSERT INTO video_reactions (video_id, user_id, kind) VALUES (:v, :u, :k)")
        async with catalog.sessions() as session:
            await session.execute(insert, {"v": video["id"], "u": user, "k": "like"})
            with pytest.raises(IntegrityError):
                await session.execute(insert, {"v": video["id"], "u": user, "k": "dislike"})
