"""Every streaming query.

A session's row is written when it starts, when a charge or a status change happens, and once when
it ends; ``end_session`` is a compare-and-set (``WHERE status <> 'ended'``), so whoever records the
end first (the viewer, a lazy check, any replica's sweeper) also writes the history and the event,
exactly once. Billed units only ever grow (``GREATEST``): a late charge result cannot undo one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.streaming.models import EndReason, PlaybackSession, SessionStatus, WatchHistory
from services.streaming.pagination import HistoryPosition

_ENDED = SessionStatus.ended.value


async def insert_session(session: AsyncSession, **values: Any) -> PlaybackSession:
    statement = pg_insert(PlaybackSession).values(**values).returning(PlaybackSession)
    return (await session.scalars(statement)).one()


async def get_session(session: AsyncSession, session_id: uuid.UUID) -> PlaybackSession | None:
    statement = (
        select(PlaybackSession)
        .where(col(PlaybackSession.id) == session_id)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


@dataclass(frozen=True, slots=True)
class Progress:
    """A live session's charges and status as the live state last reported them."""

    session_id: uuid.UUID
    status: SessionStatus
    billed_units: int
    watched_ms: int
    position_ms: int
    at: datetime


_SESSIONS = PlaybackSession.__table__  # type: ignore[attr-defined]
_LIVE = _SESSIONS.c.status != _ENDED
# A Core statement on the table (not the ORM entity): executemany, no ORM bookkeeping per row.
_RECORD_PROGRESS = (
    update(_SESSIONS)
    .where(_SESSIONS.c.id == bindparam("p_id"))
    .values(
        billed_units=func.greatest(_SESSIONS.c.billed_units, bindparam("p_billed")),
        status=case((_LIVE, bindparam("p_status")), else_=_SESSIONS.c.status),
        watched_ms=case((_LIVE, bindparam("p_watched")), else_=_SESSIONS.c.watched_ms),
        position_ms=case((_LIVE, bindparam("p_position")), else_=_SESSIONS.c.position_ms),
        updated_at=func.greatest(_SESSIONS.c.updated_at, bindparam("p_at")),
    )
)


async def record_progress(session: AsyncSession, progress: Sequence[Progress]) -> None:
    """Charges and status changes of many sessions in one round trip (an ended row keeps its status)."""
    if not progress:
        return
    await session.execute(
        _RECORD_PROGRESS,
        [
            {
                "p_id": p.session_id,
                "p_billed": p.billed_units,
                "p_status": p.status.value,
                "p_watched": p.watched_ms,
                "p_position": p.position_ms,
                "p_at": p.at,
            }
            for p in progress
        ],
    )


async def end_session(
    session: AsyncSession,
    session_id: uuid.UUID,
    *,
    reason: EndReason,
    ended_at: datetime,
    billed_units: int | None = None,
    watched_ms: int | None = None,
    position_ms: int | None = None,
) -> PlaybackSession | None:
    """Compare-and-set to ended; None when it was already ended (or never recorded).

    Values left out keep the row's own (the live state was lost; the last durable write stands).
    """
    values: dict[str, Any] = {
        "status": _ENDED,
        "end_reason": reason.value,
        "ended_at": ended_at,
        "updated_at": ended_at,
    }
    if billed_units is not None:
        values["billed_units"] = func.greatest(col(PlaybackSession.billed_units), billed_units)
    if watched_ms is not None:
        values["watched_ms"] = watched_ms
    if position_ms is not None:
        values["position_ms"] = position_ms
    statement = (
        update(PlaybackSession)
        .where(col(PlaybackSession.id) == session_id, col(PlaybackSession.status) != _ENDED)
        .values(**values)
        .returning(PlaybackSession)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


async def touch_history(
    session: AsyncSession, *, viewer_id: uuid.UUID, video_id: uuid.UUID, session_id: uuid.UUID, at: datetime
) -> None:
    """A session of this video started: it is the most recently watched (resume position unchanged)."""
    statement = pg_insert(WatchHistory).values(
        viewer_id=viewer_id,
        video_id=video_id,
        last_session_id=session_id,
        first_watched_at=at,
        last_watched_at=at,
    )
    existing = WatchHistory.__table__.c  # type: ignore[attr-defined]
    statement = statement.on_conflict_do_update(
        index_elements=[existing.viewer_id, existing.video_id],
        set_={
            "last_session_id": statement.excluded.last_session_id,
            "last_watched_at": func.greatest(existing.last_watched_at, statement.excluded.last_watched_at),
        },
    )
    await session.execute(statement)


async def record_history(
    session: AsyncSession,
    *,
    viewer_id: uuid.UUID,
    video_id: uuid.UUID,
    session_id: uuid.UUID,
    position_ms: int,
    watched_ms: int,
    completed: bool,
    at: datetime,
) -> None:
    """A session ended: its watch time adds up, its position is where to resume (unless a session
    watched more recently has reported since), and completion is kept once reached."""
    statement = pg_insert(WatchHistory).values(
        viewer_id=viewer_id,
        video_id=video_id,
        position_ms=position_ms,
        watched_ms=watched_ms,
        completed=completed,
        last_session_id=session_id,
        first_watched_at=at,
        last_watched_at=at,
    )
    existing = WatchHistory.__table__.c  # type: ignore[attr-defined]
    new = statement.excluded
    newest = new.last_watched_at >= existing.last_watched_at
    statement = statement.on_conflict_do_update(
        index_elements=[existing.viewer_id, existing.video_id],
        set_={
            "position_ms": case(
                (or_(newest, existing.last_session_id == new.last_session_id), new.position_ms),
                else_=existing.position_ms,
            ),
            "watched_ms": existing.watched_ms + new.watched_ms,
            "completed": existing.completed | new.completed,
            "last_watched_at": func.greatest(existing.last_watched_at, new.last_watched_at),
        },
    )
    await session.execute(statement)


async def list_history(
    session: AsyncSession, viewer_id: uuid.UUID, *, after: HistoryPosition | None, limit: int
) -> Sequence[WatchHistory]:
    statement = select(WatchHistory).where(col(WatchHistory.viewer_id) == viewer_id)
    if after is not None:
        statement = statement.where(
            tuple_(col(WatchHistory.last_watched_at), col(WatchHistory.video_id))
            < tuple_(after.last_watched_at, after.video_id)
        )
    statement = statement.order_by(
        col(WatchHistory.last_watched_at).desc(), col(WatchHistory.video_id).desc()
    ).limit(limit)
    return (await session.scalars(statement)).all()
