"""The event envelope on a real Redis stream, and publishing only after a commit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from common.commit_hooks import transaction
from common.db import create_engine, session_factory
from common.events import EventBus, decode_event, new_event, publish_after_commit
from tests.conftest import migrated_database


@pytest.fixture
def stream() -> str:
    return f"test:events:{uuid.uuid4().hex}"


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    # Any migrated database will do: the test only needs a transaction to commit or roll back.
    engine = create_engine(await migrated_database("analytics"), pool_size=1)
    yield engine
    await engine.dispose()


async def read_all(redis: Redis, stream: str) -> list:
    return [decode_event(fields) for _, fields in await redis.xrange(stream)]


class TestTheEnvelope:
    async def test_a_published_event_reads_back_with_every_field(self, redis: Redis, stream: str) -> None:
        event = new_event("billing.unit_charged", {"amount": 25, "key": "s:1"}, source="billing", key="s:1")
        await EventBus(redis, stream=stream).publish(event)

        [read] = await read_all(redis, stream)
        assert read == event
        assert read.version == 1
        assert read.occurred_at.tzinfo is not None

    async def test_the_same_fact_gets_the_same_id_so_consumers_can_drop_repeats(self) -> None:
        first = new_event("billing.unit_charged", {}, source="billing", key="abc:3")
        again = new_event("billing.unit_charged", {}, source="billing", key="abc:3")
        other = new_event("billing.unit_charged", {}, source="billing", key="abc:4")
        assert first.id == again.id != other.id
        assert new_event("playback.session_started", {}, source="streaming").id != first.id

    def test_a_malformed_type_is_refused(self) -> None:
        with pytest.raises(ValidationError):
            new_event("Unit Charged!", {}, source="billing")

    def test_an_entry_without_an_event_field_is_refused(self) -> None:
        with pytest.raises(ValueError, match="no 'event' field"):
            decode_event({b"other": b"{}"})

    async def test_the_stream_stays_bounded(self, redis: Redis, stream: str) -> None:
        bus = EventBus(redis, stream=stream, max_len=10)
        for batch in range(30):
            await bus.publish(
                *(new_event("test.happened", {"n": batch * 10 + i}, source="t") for i in range(10))
            )
        # Approximate trimming keeps about max_len (whole radix-tree nodes of ~100 entries).
        assert await redis.xlen(stream) < 300


class TestPublishingAfterCommit:
    async def test_a_committed_change_publishes_its_events(
        self, redis: Redis, stream: str, engine: AsyncEngine
    ) -> None:
        bus = EventBus(redis, stream=stream)
        event = new_event("test.committed", {"at": datetime.now(UTC).isoformat()}, source="t")
        async with transaction(session_factory(engine)) as session:
            await session.execute(text("SELECT 1"))
            publish_after_commit(session, bus, event)
            assert await redis.xlen(stream) == 0  # not before the commit
        assert [e.id for e in await read_all(redis, stream)] == [event.id]

    async def test_a_rolled_back_change_publishes_nothing(
        self, redis: Redis, stream: str, engine: AsyncEngine
    ) -> None:
        bus = EventBus(redis, stream=stream)
        with pytest.raises(RuntimeError):
            async with transaction(session_factory(engine)) as session:
                publish_after_commit(session, bus, new_event("test.rolled_back", {}, source="t"))
                raise RuntimeError("the change fails")
        assert await redis.xlen(stream) == 0
