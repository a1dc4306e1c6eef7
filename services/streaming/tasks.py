"""Background work of the streaming service: the expiry sweeper (one per replica; safe together)."""

from __future__ import annotations

import structlog

from common.periodic import every
from services.streaming.service import Playback

log = structlog.get_logger("streaming.sweeper")


async def run_expiry_sweeps(playback: Playback, *, interval_s: float) -> None:
    """End sessions whose heartbeats stopped, every ``interval_s``, until cancelled.

    Reads and heartbeats also end such sessions lazily; the sweeper is what ends the ones nobody
    asks about again (a closed tab), so their history and ``playback.session_ended`` are written.
    """

    async def sweep() -> None:
        # A failure (Redis or PostgreSQL briefly away) leaves the work list in Redis for next time.
        ended = await playback.sweep_expired()
        if ended:
            log.info("expired_sessions_ended", count=ended)

    await every(interval_s, sweep, failure="expiry_sweep_failed")
