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

import asyncio
import contextlib
import uuid
from collections import deque
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


class BackgroundPublisher:
    """Events leave in batches from a background task, so a request path never waits on Redis.

    A change hands its events over once it has committed; the task sends whatever has accumulated
    in one pipelined XADD round trip (at thousands of charges per second, one round trip per batch
    instead of one per event). If Redis is down the batch is kept (up to ``max_pending`` events,
    oldest dropped first, logged) and retried; a crash loses what was not sent yet, exactly like an
    after-commit callback, which is why event ids are derived from their facts.
    """

    def __init__(
        self, bus: EventBus, *, max_batch: int = 1000, max_pending: int = 100_000, retry_s: float = 0.5
    ) -> None:
        self.bus = bus
        self.max_batch = max_batch
        self.retry_s = retry_s
        self._pending: deque[Event] = deque(maxlen=max_pending)
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def publish(self, *events: Event) -> None:
        """Queue ``events`` (already committed facts) for the next batch."""
        if len(self._pending) + len(events) > (self._pending.maxlen or 0):
            log.warning("events_dropped", pending=len(self._pending))
        self._pending.extend(events)
        self._idle.clear()
        self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-publisher")

    async def flush(self) -> None:
        """Wait until everything queued so far has been sent (tests, shutdown)."""
        await self._idle.wait()

    async def aclose(self, *, timeout_s: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
                try:
                    await self.bus.publish(*batch)
                except Exception:
                    log.exception("event_publish_failed", events=len(batch))
                    self._pending.extendleft(reversed(batch))
                    await asyncio.sleep(self.retry_s)
            self._idle.set()
