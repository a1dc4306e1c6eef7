"""The event envelope and the bus every service publishes to (Redis Streams), read by analytics.

An event says that something *has happened*, so it leaves a service only after the change
committed: services write their events into their own outbox table in the same transaction
(``common.outbox.stage``), and a relay moves them to the stream (``common.outbox.OutboxRelay``);
streaming's heartbeat summaries are added by the Redis script that changes the live session.
Delivery is at-least-once: a relay can send a row twice (a crash after the XADD, before the
delete), so consumers deduplicate by ``id``; producers derive the id from the domain where one
exists (``event_id("billing.unit_charged", charge_key)``), so the same fact always carries the
same id. docs/events.md lists every type and its payload.

Each stream entry holds one field, ``event``, with the envelope as JSON::

    {"id": "...", "type": "playback.session_started", "version": 1,
     "occurred_at": "2026-11-22T10:00:00Z", "producer": "streaming", "payload": {...}}

``type`` is ``<service area>.<past-tense fact>``; ``version`` changes only when the payload's
meaning changes incompatibly, so a consumer can handle old and new shapes side by side.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from redis.asyncio import Redis

EVENT_STREAM = "streamify:events"
# Bounded (approximately, which lets Redis trim whole nodes cheaply): consumers that fall further
# behind than this lose the oldest events rather than the server running out of memory.
DEFAULT_MAX_LEN = 1_000_000
_EVENT_NAMESPACE = uuid.UUID("6f1d2b8e-6c1b-4b55-9d4c-2a7f0b7e4c11")


class Event(BaseModel):
    """One fact, as every consumer reads it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID
    type: str = Field(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$", max_length=100)
    version: int = Field(default=1, ge=1)
    occurred_at: datetime
    # The service that published it (read as "source" too, the name before issue 5's contract).
    producer: str = Field(min_length=1, max_length=50, validation_alias=AliasChoices("producer", "source"))
    payload: dict[str, Any]


def event_id(type_: str, natural_key: str) -> uuid.UUID:
    """The same id for the same fact, however often it is published."""
    return uuid.uuid5(_EVENT_NAMESPACE, f"{type_}\x00{natural_key}")


def new_event(
    type_: str,
    payload: Mapping[str, Any],
    *,
    producer: str,
    key: str | None = None,
    version: int = 1,
    occurred_at: datetime | None = None,
) -> Event:
    """An envelope; ``key`` (the fact's natural key, e.g. a charge key) makes the id deterministic."""
    return Event(
        id=event_id(type_, key) if key is not None else uuid.uuid4(),
        type=type_,
        version=version,
        occurred_at=occurred_at or datetime.now(UTC),
        producer=producer,
        payload=dict(payload),
    )


def decode_event(fields: Mapping[bytes | str, bytes | str]) -> Event:
    """The envelope of one stream entry (as ``XREAD``/``XREADGROUP`` return its fields)."""
    raw = fields.get(b"event", fields.get("event"))
    if raw is None:
        raise ValueError("stream entry has no 'event' field")
    return Event.model_validate_json(raw)


class EventBus:
    """Publishes envelopes to one Redis stream."""

    def __init__(self, redis: Redis, *, stream: str = EVENT_STREAM, max_len: int = DEFAULT_MAX_LEN) -> None:
        self.redis = redis
        self.stream = stream
        self.max_len = max_len

    async def publish(self, *events: Event) -> None:
        await self.publish_raw(event.model_dump_json() for event in events)

    async def publish_raw(self, envelopes: Iterable[str | bytes]) -> None:
        """XADD envelopes already serialised (an outbox's rows), in one pipelined round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for envelope in envelopes:
                pipe.xadd(self.stream, {"event": envelope}, maxlen=self.max_len, approximate=True)
            if len(pipe):
                await pipe.execute()
