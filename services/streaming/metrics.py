"""Streaming's business metrics: live sessions, heartbeats and the charges they trigger.

``streamify_playback_active_sessions`` is read from Redis at scrape time (the ``streaming:expiring``
set scores every live session by its expiry), so it is the platform-wide count and every replica
reports the same number: aggregate it with ``max``, not ``sum``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge
from redis.asyncio import Redis

from common.metrics import on_scrape
from services.streaming.live import EXPIRING_KEY, ChargeOutcome
from services.streaming.models import EndReason, SessionStatus

ACTIVE_SESSIONS = Gauge(
    "streamify_playback_active_sessions",
    "Playback sessions alive right now (active or waiting for payment), across every replica.",
)
SESSIONS_STARTED = Counter(
    "streamify_playback_sessions_started_total",
    "Playback sessions started, by whether they are paid.",
    ["paid"],
)
SESSIONS_ENDED = Counter(
    "streamify_playback_sessions_ended_total",
    "Playback sessions ended, by reason (ended_by_viewer, expired).",
    ["reason"],
)
HEARTBEATS = Counter(
    "streamify_playback_heartbeats_total",
    "Heartbeats answered, by outcome: the session status they answered with, or the error code.",
    ["outcome"],
)
CHARGES = Counter(
    "streamify_playback_charges_total",
    "Unit charges streaming asked billing for, by outcome (charged, insufficient, unavailable).",
    ["outcome"],
)

# Children created up front: every series exists (at 0) from the first scrape, so rates and
# increases count the first event too.
_HEARTBEATS = {status.value: HEARTBEATS.labels(status.value) for status in SessionStatus}
_CHARGES = {outcome: CHARGES.labels(outcome.value) for outcome in ChargeOutcome}
for _paid in ("true", "false"):
    SESSIONS_STARTED.labels(_paid)
for _reason in EndReason:
    SESSIONS_ENDED.labels(_reason.value)


def count_heartbeat(outcome: str) -> None:
    child = _HEARTBEATS.get(outcome)
    if child is None:  # an error code; there are a handful
        child = _HEARTBEATS[outcome] = HEARTBEATS.labels(outcome)
    child.inc()


def count_charge(outcome: ChargeOutcome) -> None:
    _CHARGES[outcome].inc()


def count_session_started(*, paid: bool) -> None:
    SESSIONS_STARTED.labels("true" if paid else "false").inc()


def count_session_ended(reason: str) -> None:
    SESSIONS_ENDED.labels(reason).inc()


def watch_live_sessions(redis: Redis) -> Callable[[], None]:
    """Count live sessions at every scrape: members of the expiring set scored after now (ended
    sessions score 0, expired ones their past expiry)."""

    async def refresh() -> None:
        now_ms = time.time_ns() // 1_000_000
        ACTIVE_SESSIONS.set(await redis.zcount(EXPIRING_KEY, f"({now_ms}", "+inf"))

    return on_scrape(refresh)
