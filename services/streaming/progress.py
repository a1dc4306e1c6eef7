"""The durable record of live sessions' charges and status changes, written in batches.

A heartbeat that charges a unit or changes a session's status records it here and answers at once;
every ``progress_flush_interval_s`` the pending records go to PostgreSQL in one statement
(executemany). With one-second units every session charges every second: one transaction per
charge was the largest cost of the whole heartbeat path (more than the charge's HTTP call).

What a crash can lose is the last interval's records, and nothing that matters: the live state in
Redis stays authoritative while the session lives, billing's ledger holds every charge, and the
end of a session writes its final figures from the live state.
"""

from __future__ import annotations

import asyncio
import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.commit_hooks import transaction
from services.streaming import repository as repo
from services.streaming.repository import Progress

log = structlog.get_logger("streaming.progress")


class ProgressLog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._pending: dict[uuid.UUID, Progress] = {}
        self._flushing = asyncio.Lock()

    def record(self, progress: Progress) -> None:
        """Keep the latest report per session (billed units never go back)."""
        earlier = self._pending.get(progress.session_id)
        if earlier is not None and earlier.billed_units > progress.billed_units:
            progress = Progress(
                session_id=progress.session_id,
                status=progress.status,
                billed_units=earlier.billed_units,
                watched_ms=progress.watched_ms,
                position_ms=progress.position_ms,
                at=progress.at,
            )
        self._pending[progress.session_id] = progress

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write everything recorded so far; on failure it stays pending for the next flush."""
        async with self._flushing:
            batch, self._pending = self._pending, {}
            if not batch:
                return 0
            try:
                async with transaction(self.sessions) as db:
                    await repo.record_progress(db, list(batch.values()))
            except BaseException:
                for progress in batch.values():
                    if progress.session_id not in self._pending:
                        self._pending[progress.session_id] = progress
                raise
            return len(batch)


async def run_progress_flushes(progress: ProgressLog, *, interval_s: float) -> None:
    """Flush every ``interval_s`` until cancelled (the lifespan flushes once more at shutdown)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await progress.flush()
        except Exception:
            log.exception("progress_flush_failed", pending=progress.pending)
