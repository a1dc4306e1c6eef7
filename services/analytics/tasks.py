"""The event consumer's handler: each batch of events from the bus lands in one transaction, and
the backfill that rebuilds every rollup from the stored raw events."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import replace

import asyncpg
import structlog
from redis.asyncio import Redis

from common.consumer import EventConsumer
from common.events import EVENT_STREAM, Event
from services.analytics import repository as repo
from services.analytics.service import HANDLED_TYPES, Rules, aggregate, first_sightings
from services.analytics.settings import AnalyticsSettings

GROUP = "analytics"
log = structlog.get_logger("analytics.ingest")


class Ingest:
    """Applies batches of events to the rollups; safe to run twice on the same events."""

    def __init__(self, pool: asyncpg.Pool, rules: Rules) -> None:
        self.pool = pool
        self.rules = rules

    async def handle(self, events: Sequence[Event]) -> None:
        """Store the events not seen before and add what they mean, all or nothing."""
        unique = list({event.id: event for event in events}.values())
        async with self.pool.acquire() as connection, connection.transaction():
            fresh_ids = await repo.store_raw(connection, unique)
            await apply_events(connection, [e for e in unique if e.id in fresh_ids], self.rules)


async def apply_events(connection: asyncpg.Connection, events: Sequence[Event], rules: Rules) -> None:
    """Add what ``events`` (new to analytics) mean to the rollups, inside the caller's transaction."""
    handled = sorted((e for e in events if e.type in HANDLED_TYPES), key=lambda e: e.occurred_at)
    if not handled:
        return
    stored = await repo.lock_sessions(connection, first_sightings(handled))
    durations = await repo.known_durations(
        connection, {row.video_id for row in stored.values() if row.duration_s is None}
    )
    stored = {
        sid: replace(row, duration_s=durations.get(row.video_id)) if row.duration_s is None else row
        for sid, row in stored.items()
    }
    await repo.apply(connection, aggregate(handled, stored, rules))


async def backfill(pool: asyncpg.Pool, rules: Rules, *, chunk: int = 5000) -> int:
    """Rebuild every rollup from the raw events, in one transaction (readers see the old rollups
    until it commits); the number of events replayed."""
    replayed = 0
    async with pool.acquire() as connection, connection.transaction():
        await repo.clear_rollups(connection)
        batch: list[Event] = []
        async for envelope in repo.raw_history(connection, chunk=chunk):
            batch.append(Event.model_validate_json(envelope))
            if len(batch) >= chunk:
                await apply_events(connection, batch, rules)
                replayed += len(batch)
                batch = []
        await apply_events(connection, batch, rules)
        replayed += len(batch)
    log.info("analytics_backfilled", events=replayed)
    return replayed


def rules_from(settings: AnalyticsSettings) -> Rules:
    return Rules(view_threshold_s=settings.view_threshold_seconds, completion_ratio=settings.completion_ratio)


def event_consumer(
    redis: Redis, ingest: Ingest, settings: AnalyticsSettings, index: int = 0
) -> EventConsumer:
    """Member ``index`` of this process's consumers. A process runs ``settings.consumers`` of them so
    one batch's Python work overlaps another's wait on PostgreSQL (batches touching the same session
    serialise on its row lock; every statement takes its rows in key order, so they cannot deadlock)."""
    return EventConsumer(
        redis,
        group=GROUP,
        consumer=f"{socket.gethostname()}-{os.getpid()}-{index}",
        handler=ingest.handle,
        stream=settings.event_stream or EVENT_STREAM,
        batch_size=settings.consumer_batch_size,
        linger_ms=settings.consumer_linger_ms,
    )
