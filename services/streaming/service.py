"""Playback business rules (SPEC §3 Streaming, §4 pay-per-minute). No HTTP here.

A session's life::

    start ──> active <──> payment_required ──> ended
                 └────────────────────────────────┘   (viewer ends it, or no heartbeat for
                                                        missed_heartbeats_to_end intervals)

- start: the video must be ready and visible to the viewer; a paid video (price > 0, not the
  viewer's own) charges unit 0 at once (prepaid) or answers 402 with nothing left behind.
- heartbeats accrue watch time in Redis (``live.py``) in one round trip; when watch time enters a
  new unit, the heartbeat that noticed it takes the session's charge lease and charges every due
  unit in order, key ``{session_id}:{unit}``. 402 from billing -> payment_required (watch time is
  held at what has been paid; every later heartbeat retries the pending unit, so a top-up resumes
  the same session). Billing unreachable -> the session keeps playing and the same key is retried
  on later heartbeats; after ``billing_grace_seconds`` of that, payment_required (fail closed).
- PostgreSQL gets the session when it starts (with ``playback.session_started`` in its outbox),
  its charges and status changes (batched every ``progress_flush_interval_s``, ``progress.py``),
  and its end (with the watch history and ``playback.session_ended``, at once) — never anything
  for a plain heartbeat, whose ``playback.heartbeat`` summary the heartbeat script adds to the
  event stream itself.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.commit_hooks import after_commit, transaction
from common.events import new_event
from common.outbox import stage
from services.streaming import metrics
from services.streaming import repository as repo
from services.streaming.credentials import mint_playback_credential
from services.streaming.errors import (
    BillingUnavailable,
    InsufficientFunds,
    SessionNotFound,
    TokenRevoked,
    TooManySessions,
    VideoNotFound,
    VideoNotReady,
)
from services.streaming.live import (
    ChargeOutcome,
    LiveSession,
    LiveSessions,
    NewSession,
    ScriptResult,
)
from services.streaming.models import EndReason, PlaybackSession, SessionStatus, WatchHistory
from services.streaming.pagination import HistoryPosition, decode_cursor, encode_cursor
from services.streaming.peers import BillingClient, CatalogClient, UnitCharge
from services.streaming.progress import ProgressLog
from services.streaming.repository import Progress
from services.streaming.schemas import CatalogVideo
from services.streaming.settings import StreamingSettings

log = structlog.get_logger("streaming")

Clock = Callable[[], int]
SOURCE = "streaming"
# A start holds its slot this long before the session exists (a crashed start frees it by itself).
START_HOLD_MS = 60_000


def system_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Viewer:
    """The verified caller."""

    user_id: uuid.UUID
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session as the API shows it, from the live state or from the durable record."""

    session_id: uuid.UUID
    video_id: uuid.UUID
    status: SessionStatus
    paid: bool
    price_per_minute: int
    currency: str
    unit_ms: int
    billed_units: int
    balance: int | None
    watched_ms: int
    position_ms: int
    duration_ms: int | None
    started_at: datetime
    ended_at: datetime | None
    end_reason: EndReason | None

    @property
    def charged_total(self) -> int:
        # Computed from units, so a replayed charge can never be counted twice.
        return self.billed_units * self.price_per_minute if self.paid else 0

    @classmethod
    def from_live(cls, state: LiveSession) -> SessionView:
        return cls(
            session_id=state.session_id,
            video_id=state.video_id,
            status=state.status,
            paid=state.paid,
            price_per_minute=state.price_per_minute,
            currency=state.currency,
            unit_ms=state.unit_ms,
            billed_units=state.billed_units,
            balance=state.balance,
            watched_ms=state.watched_ms,
            position_ms=state.position_ms,
            duration_ms=state.duration_ms,
            started_at=ms_to_datetime(state.started_ms),
            ended_at=ms_to_datetime(state.ended_at_ms) if state.ended_at_ms is not None else None,
            end_reason=state.end_reason,
        )

    @classmethod
    def from_row(cls, row: PlaybackSession, *, balance: int | None = None) -> SessionView:
        return cls(
            session_id=row.id,
            video_id=row.video_id,
            status=SessionStatus(row.status),
            paid=row.paid,
            price_per_minute=row.price_per_minute,
            currency=row.currency,
            unit_ms=row.unit_ms,
            billed_units=row.billed_units,
            balance=balance,
            watched_ms=row.watched_ms,
            position_ms=row.position_ms,
            duration_ms=row.duration_ms,
            started_at=row.started_at,
            ended_at=row.ended_at,
            end_reason=EndReason(row.end_reason) if row.end_reason else None,
        )


@dataclass(frozen=True, slots=True)
class HistoryPage:
    items: list[WatchHistory]
    next_cursor: str | None


class Playback:
    """The streaming service's rules over its resources (one per app, on ``app.state.playback``)."""

    def __init__(
        self,
        *,
        settings: StreamingSettings,
        sessions: async_sessionmaker[AsyncSession],
        live: LiveSessions,
        catalog: CatalogClient,
        billing: BillingClient,
        progress: ProgressLog,
        clock: Clock = system_clock_ms,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.live = live
        self.catalog = catalog
        self.billing = billing
        self.progress = progress
        self.clock = clock
        self.unit_ms = round(settings.billing_unit_seconds * 1000)
        self.grace_ms = round(settings.billing_grace_seconds * 1000)

    # --- start ---------------------------------------------------------------------------------

    async def start_session(self, db: AsyncSession, *, viewer: Viewer, video_id: uuid.UUID) -> SessionView:
        """A new session of a ready video the viewer may see; unit 0 charged now when it is paid."""
        video = await self.catalog.get_video(video_id)
        if video is None or not self._may_see(viewer, video):
            raise VideoNotFound()
        if video.status != "ready":
            raise VideoNotReady()
        # Free videos and the creator's own are never charged.
        paid = video.price_per_minute > 0 and video.creator_id != viewer.user_id
        duration_ms = round(video.duration_s * 1000) if video.duration_s is not None else None
        session_id = uuid.uuid4()
        now = self.clock()
        limit = self.settings.max_sessions_per_user
        if not await self.live.reserve(
            viewer_id=viewer.user_id, session_id=session_id, now_ms=now, limit=limit, hold_ms=START_HOLD_MS
        ):
            raise TooManySessions(
                f"You already have {limit} playback sessions open; end one to start another.", limit=limit
            )
        try:
            started_at = ms_to_datetime(now)
            row = await repo.insert_session(
                db,
                id=session_id,
                viewer_id=viewer.user_id,
                video_id=video.id,
                creator_id=video.creator_id,
                status=SessionStatus.active.value,
                paid=paid,
                price_per_minute=video.price_per_minute,
                currency=video.currency,
                unit_ms=self.unit_ms,
                duration_ms=duration_ms,
                billed_units=1 if paid else 0,
                started_at=started_at,
                updated_at=started_at,
            )
            await repo.touch_history(
                db, viewer_id=viewer.user_id, video_id=video.id, session_id=session_id, at=started_at
            )
            await stage(
                db,
                new_event(
                    "playback.session_started",
                    {
                        "session_id": str(session_id),
                        "viewer_id": str(viewer.user_id),
                        "video_id": str(video.id),
                        "creator_id": str(video.creator_id),
                        "paid": paid,
                        "price_per_minute": video.price_per_minute,
                        "currency": video.currency,
                        "billing_unit_s": self.unit_ms / 1000,
                        "duration_s": duration_ms / 1000 if duration_ms is not None else None,
                    },
                    producer=SOURCE,
                    key=str(session_id),
                    occurred_at=started_at,
                ),
            )
            balance: int | None = None
            if paid:
                # Prepaid: unit 0 now. The row above is not committed, so a refusal leaves nothing.
                charge = await self.billing.charge_unit(self._unit(row, 0))
                if charge.outcome is ChargeOutcome.insufficient:
                    raise InsufficientFunds(balance=charge.balance)
                if charge.outcome is ChargeOutcome.unavailable:
                    raise BillingUnavailable()
                balance = charge.balance
            state = await self.live.open(
                NewSession(
                    session_id=session_id,
                    viewer_id=viewer.user_id,
                    video_id=video.id,
                    creator_id=video.creator_id,
                    paid=paid,
                    price_per_minute=video.price_per_minute,
                    currency=video.currency,
                    unit_ms=self.unit_ms,
                    duration_ms=duration_ms,
                    billed_units=1 if paid else 0,
                    balance=balance,
                ),
                now_ms=now,
            )
        except BaseException:
            await self.live.release(viewer_id=viewer.user_id, session_id=session_id)
            raise

        async def count_view() -> None:
            await self.catalog.count_view(video.id)

        after_commit(db, count_view)
        log.info("session_started", session_id=str(session_id), video_id=str(video.id), paid=paid)
        metrics.count_session_started(paid=paid)
        return SessionView.from_live(state)

    @staticmethod
    def _may_see(viewer: Viewer, video: CatalogVideo) -> bool:
        return video.visibility != "private" or viewer.is_admin or video.creator_id == viewer.user_id

    def master_url(self, view: SessionView) -> str | None:
        """The session's HLS entry point, with a fresh credential; None once the session ended."""
        if view.status is SessionStatus.ended:
            return None
        now_s = self.clock() // 1000
        lifetime = self.settings.playback_credential_ttl_s
        if view.duration_ms is not None:
            lifetime = max(lifetime, math.ceil(2 * view.duration_ms / 1000))
        credential = mint_playback_credential(
            self.settings.playback_secret,
            session_id=view.session_id,
            video_id=view.video_id,
            expires_at=now_s + lifetime,
        )
        return (
            f"{self.settings.public_api_prefix}/playback/sessions/{view.session_id}/{credential}/master.m3u8"
        )

    # --- heartbeats ----------------------------------------------------------------------------

    async def heartbeat(
        self, session_id: uuid.UUID, *, viewer: Viewer, token_id: str, position_s: float, playing: bool
    ) -> SessionView:
        """SPEC §4 accounting for one heartbeat; charges the units it made due."""
        now = self.clock()
        result = await self.live.heartbeat(
            session_id,
            viewer_id=viewer.user_id,
            token_id=token_id,
            now_ms=now,
            position_ms=round(position_s * 1000),
            playing=playing,
        )
        if result.code == "revoked":
            raise TokenRevoked()
        if result.code == "not_found":
            raise SessionNotFound()
        if result.code == "missing":
            return await self._without_live_state(session_id, viewer=viewer)
        state = result.state
        assert state is not None
        if result.code == "expired":
            return await self._record_end(state)
        if result.code == "charge":
            state = await self._charge_due_units(state, result)
        return SessionView.from_live(state)

    def _unit(self, session: PlaybackSession | LiveSession, unit: int) -> UnitCharge:
        session_id = session.id if isinstance(session, PlaybackSession) else session.session_id
        return UnitCharge(
            session_id=session_id,
            unit=unit,
            viewer_id=session.viewer_id,
            creator_id=session.creator_id,
            video_id=session.video_id,
            amount=session.price_per_minute,
            currency=session.currency,
        )

    async def _charge_due_units(self, state: LiveSession, lease: ScriptResult) -> LiveSession:
        """Charge units billed_units .. due-1 in order (this caller holds the session's lease)."""
        billed = state.billed_units
        outcome = ChargeOutcome.charged
        balance = None
        try:
            for unit in range(state.billed_units, lease.due_units):
                result = await self.billing.charge_unit(self._unit(state, unit))
                if result.balance is not None:
                    balance = result.balance
                outcome = result.outcome
                if outcome is not ChargeOutcome.charged:
                    break
                billed = unit + 1
        except Exception:
            # Something unexpected: record what was paid and hand the lease back at once, so the
            # next heartbeat retries (same keys) instead of waiting for the lease to lapse.
            await self.live.settle(
                state.session_id,
                lease_epoch=lease.lease_epoch,
                now_ms=self.clock(),
                billed_units=billed,
                outcome=ChargeOutcome.unavailable,
                balance=balance,
                grace_ms=self.grace_ms,
            )
            raise
        now = self.clock()
        settled = await self.live.settle(
            state.session_id,
            lease_epoch=lease.lease_epoch,
            now_ms=now,
            billed_units=billed,
            outcome=outcome,
            balance=balance,
            grace_ms=self.grace_ms,
        )
        if settled.state is None:  # the live state vanished meanwhile; the units stand in billing
            log.warning("settle_without_live_state", session_id=str(state.session_id), billed=billed)
            return state
        after = settled.state
        if settled.code == "changed":
            self.progress.record(
                Progress(
                    session_id=after.session_id,
                    status=after.status,
                    billed_units=after.billed_units,
                    watched_ms=after.watched_ms,
                    position_ms=after.position_ms,
                    at=ms_to_datetime(now),
                )
            )
            if after.status != state.status:
                log.info(
                    "session_status_changed",
                    session_id=str(after.session_id),
                    status=after.status.value,
                    billed_units=after.billed_units,
                    outcome=outcome.value,
                )
        return after

    # --- reading and ending --------------------------------------------------------------------

    async def get_session(self, session_id: uuid.UUID, *, viewer: Viewer) -> SessionView:
        state = await self.live.read(session_id)
        if state is None:
            return await self._without_live_state(session_id, viewer=viewer)
        if state.viewer_id != viewer.user_id:
            raise SessionNotFound()
        if state.status is not SessionStatus.ended and state.expires_at_ms <= self.clock():
            # Lazy check: no heartbeat for too long.
            result = await self.live.end(session_id, now_ms=self.clock(), viewer_id=viewer.user_id)
            if result.code == "ended" and result.state is not None:
                return await self._record_end(result.state)
            if result.state is not None:  # a heartbeat (or another end) got there first
                return SessionView.from_live(result.state)
        return SessionView.from_live(state)

    async def end_session(self, session_id: uuid.UUID, *, viewer: Viewer) -> SessionView:
        """The viewer stops watching (idempotent: ending an ended session answers it as it ended)."""
        result = await self.live.end(
            session_id,
            now_ms=self.clock(),
            viewer_id=viewer.user_id,
            reason=EndReason.ended_by_viewer,
            force=True,
        )
        if result.code == "not_found":
            raise SessionNotFound()
        if result.code == "missing":
            return await self._without_live_state(session_id, viewer=viewer)
        assert result.state is not None
        return await self._record_end(result.state)

    async def _without_live_state(self, session_id: uuid.UUID, *, viewer: Viewer) -> SessionView:
        """No live state: a session ended long ago (or Redis lost it, which ends it now)."""
        async with self.sessions() as db:
            row = await repo.get_session(db, session_id)
        if row is None or row.viewer_id != viewer.user_id:
            raise SessionNotFound()
        if row.status != SessionStatus.ended.value:
            ended = await self._record_end_from_row(row)
            row = ended or row
        return SessionView.from_row(row)

    async def _record_end(self, state: LiveSession) -> SessionView:
        """Write the end the live state already decided: the row, the history, the event."""
        assert state.end_reason is not None and state.ended_at_ms is not None
        ended_at = ms_to_datetime(state.ended_at_ms)
        async with transaction(self.sessions) as db:
            row = await repo.end_session(
                db,
                state.session_id,
                reason=state.end_reason,
                ended_at=ended_at,
                billed_units=state.billed_units,
                watched_ms=state.watched_ms,
                position_ms=state.position_ms,
            )
            if row is not None:
                await self._history_and_event(db, row)
        await self.live.recorded(state.session_id)
        return SessionView.from_live(state)

    async def _record_end_from_row(self, row: PlaybackSession) -> PlaybackSession | None:
        ended_at = ms_to_datetime(max(self.clock(), datetime_to_ms(row.updated_at)))
        async with transaction(self.sessions) as db:
            ended = await repo.end_session(db, row.id, reason=EndReason.expired, ended_at=ended_at)
            if ended is not None:
                await self._history_and_event(db, ended)
        await self.live.recorded(row.id)
        return ended

    async def _history_and_event(self, db: AsyncSession, row: PlaybackSession) -> None:
        assert row.ended_at is not None and row.end_reason is not None
        completed = (
            row.duration_ms is not None
            and row.duration_ms > 0
            and row.position_ms >= self.settings.completion_ratio * row.duration_ms
        )
        await repo.record_history(
            db,
            viewer_id=row.viewer_id,
            video_id=row.video_id,
            session_id=row.id,
            position_ms=row.position_ms,
            watched_ms=row.watched_ms,
            completed=completed,
            at=row.ended_at,
        )
        charged_total = row.billed_units * row.price_per_minute if row.paid else 0
        event = new_event(
            "playback.session_ended",
            {
                "session_id": str(row.id),
                "viewer_id": str(row.viewer_id),
                "video_id": str(row.video_id),
                "creator_id": str(row.creator_id),
                "reason": row.end_reason,
                "paid": row.paid,
                "billed_units": row.billed_units,
                "charged_total": charged_total,
                "currency": row.currency,
                "watched_s": row.watched_ms / 1000,
                "position_s": row.position_ms / 1000,
                "duration_s": row.duration_ms / 1000 if row.duration_ms is not None else None,
                "completed": completed,
                "started_at": row.started_at.isoformat(),
                "ended_at": row.ended_at.isoformat(),
            },
            producer=SOURCE,
            key=str(row.id),
            occurred_at=row.ended_at,
        )
        await stage(db, event)
        metrics.count_session_ended(row.end_reason)
        log.info(
            "session_ended",
            session_id=str(row.id),
            reason=row.end_reason,
            billed_units=row.billed_units,
            watched_ms=row.watched_ms,
        )

    async def sweep_expired(self, *, batch: int = 200) -> int:
        """End every session whose heartbeats stopped (and finish recording any end a crash left
        half done); safe to run on every replica at once. Returns how many it recorded."""
        recorded = 0
        while True:
            due = await self.live.expired(now_ms=self.clock(), limit=batch)
            for session_id in due:
                recorded += await self._sweep_one(session_id)
            if len(due) < batch:
                return recorded

    async def _sweep_one(self, session_id: uuid.UUID) -> int:
        result = await self.live.end(session_id, now_ms=self.clock())
        if result.code == "alive":  # a heartbeat arrived since the list was read
            return 0
        if result.state is not None:
            await self._record_end(result.state)
            return 1
        # No live state any more: end it from its record, if that is still open.
        async with self.sessions() as db:
            row = await repo.get_session(db, session_id)
        if row is not None and row.status != SessionStatus.ended.value:
            await self._record_end_from_row(row)
            return 1
        await self.live.recorded(session_id)
        return 0

    # --- history -------------------------------------------------------------------------------

    async def history(
        self, db: AsyncSession, *, viewer: Viewer, cursor: str | None, limit: int
    ) -> HistoryPage:
        after = decode_cursor(cursor) if cursor else None
        rows = list(await repo.list_history(db, viewer.user_id, after=after, limit=limit + 1))
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = encode_cursor(
                HistoryPosition(last_watched_at=last.last_watched_at, video_id=last.video_id)
            )
        return HistoryPage(items=rows, next_cursor=next_cursor)
