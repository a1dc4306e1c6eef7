"""Background work of the streaming service: the expiry sweeper (one per replica; safe together)."""

from __future__ import annotations

import asyncio

import structlog

from services.streaming.service import Playback

log = structlog.get_logger("streaming.sweeper")


async def run_expiry_sweeps(playback: Playback, *, interval_s: float) -> None:
    """End sessions whose heartbeats stopped, every ``interval_s``, until cancelled.

    Reads and heartbeats also end such sessions lazily; the sweeper is what ends the ones nobody
    asks about again (a closed tab), so their history and ``playback.session_ended`` are written.
    """
    while True:
        await asyncio.sleep(interval_s)
        try:
            ended = await playback.sweep_expired()
        except Exception:
            # Redis or PostgreSQL briefly away: the work list stays in Redis; try again next time.
            log.exception("expiry_sweep_failed")
            continue
        if ended:
            log.info("expired_sessions_ended", count=ended)
