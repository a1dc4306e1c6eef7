"""The event envelope and the bus every service publishes to (Redis Streams), read by analytics.

An event says that something *has happened*: services publish only after the change committed
(``publish_after_commit``), never before. Delivery is at-least-once: a publish can be repeated
(a retry, a sweep) and a consumer can see an event twice, so consumers deduplicate by ``id``;
producers derive the id from the domain where one exists (``event_id("billing.unit_charged",
charge_key)``), so the same fact always carries the same id.

Each stream entry holds one field, ``event``, with the envelope as JSON::

    {"id": "...", "type": "playback.session_started", "version": 1,
     "occurred_at": "2026-11-22T10:00:00Z", "source": "streaming", "payload": {...}}

``type`` is ``<service area>.<past-tense fact>``; ``version`` changes only when the payload's
meaning changes incompatibly, so a consumer can handle old and new shapes side by side.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from common.commit_hooks import after_commit

EVENT_STREAM = "streamify:events"
# Bounded (approximately, which lets Redis trim whole nodes cheaply): consumers that fall further
# behind than this lose the oldest events rather than the server running out of memory.
DEFAULT_MAX_LEN = 1_000_000
_EVENT_NAMESPACE = uuid.UUID("6f1d2b8e-6c1b-4b55-9d4c-2a7f0b7e4c11")
log = structlog.get_logger("events")


class Event(BaseModel):
    """One fact, as every consumer reads it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID
    type: str = Field(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$", max_length=100)
    version: int = Field(default=1, ge=1)
    occurred_at: datetime
    source: str = Field(min_length=1, max_length=50)
    payload: dict[str, Any]


def event_id(type_: str, natural_key: str) -> uuid.UUID:
    """The same id for the same fact, however often it is published."""
    return uuid.uuid5(_EVENT_NAMESPACE, f"{type_}\x00{natural_key}")


def new_event(
    type_: str,
    payload: Mapping[str, Any],
    *,
    source: str,
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
        source=source,
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
        if not events:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(
                    self.stream,
                    {"event": event.model_dump_json()},
                    maxlen=self.max_len,
                    approximate=True,
                )
            await pipe.execute()


def publish_after_commit(session: AsyncSession, bus: EventBus, *events: Event) -> None:
    """Publish ``events`` once the session's transaction commits; dropped if it rolls back."""

    async def publish() -> None:
        await bus.publish(*events)

    after_commit(session, publish)
