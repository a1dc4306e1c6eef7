"""The event envelope on a real Redis stream (the outbox that publishes after a commit is
tested in test_outbox.py)."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from common.events import EventBus, decode_event, new_event


@pytest.fixture
def stream() -> str:
    return f"test:events:{uuid.uuid4().hex}"


async def read_all(redis: Redis, stream: str) -> list:
    return [decode_event(fields) for _, fields in await redis.xrange(stream)]


class TestTheEnvelope:
    async def test_a_published_event_reads_back_with_every_field(self, redis: Redis, stream: str) -> None:
        event = new_event("billing.unit_charged", {"amount": 25, "key": "s:1"}, producer="billing", key="s:1")
        await EventBus(redis, stream=stream).publish(event)

        [read] = await read_all(redis, stream)
        assert read == event
        assert read.version == 1
        assert read.occurred_at.tzinfo is not None

    async def test_the_same_fact_gets_the_same_id_so_consumers_can_drop_repeats(self) -> None:
        first = new_event("billing.unit_charged", {}, producer="billing", key="abc:3")
        again = new_event("billing.unit_charged", {}, producer="billing", key="abc:3")
        other = new_event("billing.unit_charged", {}, producer="billing", key="abc:4")
        assert first.id == again.id != other.id
        assert new_event("playback.session_started", {}, producer="streaming").id != first.id

    def test_a_malformed_type_is_refused(self) -> None:
        with pytest.raises(ValidationError):
            new_event("Unit Charged!", {}, producer="billing")

    def test_an_entry_without_an_event_field_is_refused(self) -> None:
        with pytest.raises(ValueError, match="no 'event' field"):
            decode_event({b"other": b"{}"})

    async def test_the_stream_stays_bounded(self, redis: Redis, stream: str) -> None:
        bus = EventBus(redis, stream=stream, max_len=10)
        for batch in range(30):
            await bus.publish(
                *(new_event("test.happened", {"n": batch * 10 + i}, producer="t") for i in range(10))
            )
        # Approximate trimming keeps about max_len (whole radix-tree nodes of ~100 entries).
        assert await redis.xlen(stream) < 300


class TestPublishingSerialisedEnvelopes:
    async def test_envelopes_go_to_the_stream_byte_for_byte_in_order(self, redis: Redis, stream: str) -> None:
        events = [new_event("test.happened", {"n": n}, producer="t") for n in range(3)]
        envelopes = [event.model_dump_json() for event in events]
        await EventBus(redis, stream=stream).publish_raw(envelopes)
        assert [fields[b"event"].decode() for _, fields in await redis.xrange(stream)] == envelopes
        assert await read_all(redis, stream) == events

    async def test_nothing_to_publish_sends_nothing(self, redis: Redis, stream: str) -> None:
        await EventBus(redis, stream=stream).publish_raw([])
        await EventBus(redis, stream=stream).publish()
        assert await redis.xlen(stream) == 0
